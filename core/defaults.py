"""Config blocks with their defaults, shared by configs/ and distill/.

They live in the leaf package so that a config file builds its blocks without
importing the pipeline (jax, orbax, tfds); distill/ reads them from here.
"""
import ml_collections

# Every built-in method's options with their defaults, declared once: what
# its loss takes ('loss') and what its fit takes ('fit', run on the
# teacher's validation outputs). A config file reads them here (it loads
# without the pipeline); the method's registry entry (distill/methods.py:
# register) holds them with its loss, fit and capabilities. config.method_kw
# holds their union, so that any option can be set from the command line
# (`--config.method_kw.normalize=True`); a method receives the options it
# takes, and setting another method's option away from its default is an
# error (distill/methods.py: Method.options_of).

# The LM distillation objectives' options (forward_kl, reverse_kl, jsd):
# (1 - alpha) CE(labels) + alpha T^2 D(teacher_T, student_T), D on the
# teacher's teacher_top_k / teacher_top_p support (0 / 1.0: all of it), the
# dropped mass renormalised away or kept as one "other" category
# (distill/methods.py, distill/divergences.py; docs/distillation.md).
_OBJECTIVE = dict(alpha=1.0, temperature=1.0, teacher_top_k=0,
                  teacher_top_p=1.0,
                  truncation='renormalize')   # renormalize | other_bucket

METHOD_OPTIONS = {
    'supervised': dict(loss=dict(label_smoothing=0.0)),
    'vanilla': dict(loss=dict(temperature=1.0)),
    'hard': dict(loss=dict()),
    'weighted': dict(loss=dict(soft=True, temperature=1.0),
                     fit=dict(weight_mode='isotonic')),  # isotonic | debiased
    'slam': dict(
        loss=dict(eps=1e-7, normalize=False, target='soft'),
        fit=dict(
            alpha_floor=1e-3,      # alpha clipped to [floor, 1]
            k='global',            # global | per_example
            k_delta=0.05,          # top-k accuracy target 1 - delta
            k_bins=5,              # per_example: margin quantile bins
        )),
    'taylor_ce': dict(loss=dict(order=2)),
    'pseudo_label': dict(loss=dict(threshold=0.9)),
    'forward_kl': dict(loss=dict(_OBJECTIVE)),
    'reverse_kl': dict(loss=dict(_OBJECTIVE)),
    'jsd': dict(loss=dict(_OBJECTIVE, beta=0.5)),   # JSD(beta), in (0, 1)
}

# Fit options that the `distill` block held before they moved to
# config.method_kw with their method: `distill.KEY` is now
# `method_kw.KEY` (configs/common.py: override takes the old spelling, a
# config that still sets one is one line naming the new key), and run
# identities made before keep their hash (distill/workdir.py:
# legacy_layout).
MOVED_TO_METHOD_KW = ('weight_mode', 'alpha_floor', 'k', 'k_delta', 'k_bins')

# Options that config.method_kw gained after cells were recorded (the LM
# distillation objectives'): a config's recorded identity leaves them out
# while at their defaults (distill/workdir.py: legacy_layout), so the cells
# recorded before keep their hash; a workdir made before resumes
# (distill/workdir.py: an option absent there and at its default here).
ADDED_TO_METHOD_KW = ('alpha', 'beta', 'teacher_top_k', 'teacher_top_p',
                      'truncation')

# Keys that a stage config (one with a `method_kw` block: the config, its
# teacher's, ...) gained after cells were recorded, with the default that
# computes what ran before them: a recorded identity leaves each out while
# at that default (distill/workdir.py: legacy_layout), and a workdir made
# before resumes (distill/workdir.py: differences). Add a key here when a
# config block gains one.
ADDED_KEYS = {
    'data.unlabeled_from.folder': '',    # your own unlabeled images
    'data.test_dir': '',                 # image_folder's test images
    'data.skip_bad_images': False,
    'init.weights': '',                  # init.method=pretrained
    'init.head': 'auto',
    'init.pretrained_on': '',            # declared, recorded, not checked
    'distill.cache_dtype': 'float32',    # offline LM top-k cache values
    'loss_chunk_len': 0,                 # LM loss in sequence chunks
    'model.head_matmul': 'auto',         # the LM head's matmul
}


def moved_key(key):
  """Dotted config key `key`, or where it is now if it moved:
  `distill.k` -> `method_kw.k` (also under `teacher.config.`)."""
  *path, last = key.split('.')
  if path and path[-1] == 'distill' and last in MOVED_TO_METHOD_KW:
    return '.'.join(path[:-1] + ['method_kw', last])
  return key


def method_options():
  """{option: default} over every method's loss and fit options (equal
  defaults where shared)."""
  out = {}
  for declared in METHOD_OPTIONS.values():
    for options in declared.values():
      for key, value in options.items():
        assert out.get(key, value) == value, key
        out[key] = value
  return out


def method_kw():
  """The `config.method_kw` block: every method's options, at defaults."""
  return ml_collections.ConfigDict(method_options())


def distill():
  """The `config.distill` block, with defaults."""
  return ml_collections.ConfigDict(dict(
      # (The methods' fit options, weight_mode, alpha_floor, k, k_delta
      # and k_bins, are in config.method_kw: METHOD_OPTIONS.)
      add_labeled=False,         # student also trains on the labeled part
      # After distillation, fine-tune the student on this many labeled
      # examples per class (0: off), as for out-of-distribution unlabeled data.
      finetune_per_class=0,
      finetune_steps=200,
      finetune_lr=1e-3,
      cache_topk=0,              # >0: cache only the top-k teacher logits
      # Offline LMs (distill/lm_cache.py): the storage dtype of the cached
      # per-token top-k log-probabilities: float32 | bfloat16 | float16.
      cache_dtype='float32',
      predict_batch_size=500,
      # Online: the teacher runs inside every student step on the student's
      # own training data (LMs: per-token outputs too large to cache); no
      # labeling pass, no fitted state.
      online=False,
      # Online: the frozen teacher's parameters and compute in this dtype
      # ('' = its own model_dtype and float32 parameters; bfloat16 halves
      # its memory). It is sharded like the student by the same rules.
      teacher_dtype='',
  ))


def active():
  """The `config.active` block, with defaults."""
  return ml_collections.ConfigDict(dict(
      strategy='rad',       # random | margin | entropy | kcenter | rad
      budget=1000,          # total teacher queries on the pool, initial
                            # set included
      per_round=250,        # queries per round (b)
      initial=250,          # random pool points queried before round 1
      warm_start=False,     # next round's student starts from this one's
      m=-1,                 # RAD's expected mislabeled points; -1: from
                            # the teacher's validation error rate x m_over
      m_over='pool',        # pool: error x unlabeled pool size (the spec's
                            # reading); round: error x this round's b;
                            # remaining: error x the points not yet queried
      round0_from='',       # another active run (same data, seed, initial
                            # set, student) whose finished round-0 student
                            # is copied instead of retrained
  ))
