"""Config blocks with their defaults, shared by configs/ and distill/.

They live in the leaf package so that a config file builds its blocks without
importing the pipeline (jax, orbax, tfds); distill/ reads them from here.
"""
import ml_collections

# Every registered method's options and their defaults (the keyword defaults
# of its loss in distill/methods.py; tests/test_method_registry.py keeps the
# two equal). config.method_kw holds their union, so that any option can be
# set from the command line (`--config.method_kw.normalize=True`); a method
# receives the options it takes, and setting another method's option away
# from its default is an error (distill/methods.py: options_for).
METHOD_OPTIONS = {
    'supervised': dict(label_smoothing=0.0),
    'vanilla': dict(temperature=1.0),
    'hard': dict(),
    'weighted': dict(soft=True, temperature=1.0),
    'slam': dict(eps=1e-7, normalize=False, target='soft'),
    'taylor_ce': dict(order=2),
    'pseudo_label': dict(threshold=0.9),
}


def method_options():
  """{option: default} over every method (equal defaults where shared)."""
  out = {}
  for options in METHOD_OPTIONS.values():
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
      weight_mode='isotonic',    # weighted: isotonic | debiased
      alpha_floor=1e-3,          # slam: alpha clipped to [floor, 1]
      k='global',                # slam: global | per_example
      k_delta=0.05,              # slam: top-k accuracy target 1 - delta
      k_bins=5,                  # slam per_example: margin quantile bins
      add_labeled=False,         # student also trains on the labeled part
      # After distillation, fine-tune the student on this many labeled
      # examples per class (0: off), as for out-of-distribution unlabeled data.
      finetune_per_class=0,
      finetune_steps=200,
      finetune_lr=1e-3,
      cache_topk=0,              # >0: cache only the top-k teacher logits
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
