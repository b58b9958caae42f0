"""Distillation with unlabeled examples, end to end, from one config.

    python -m launch.main --config=configs/digits_distill.py:method=slam \
        --workdir=/tmp/distill/digits_slam

1. Teacher: trained first in `<workdir>/teacher` from `config.teacher.config`
   (resumable, skipped when finished), or loaded from `config.teacher.workdir`
   (online distillation also: a Hugging Face model folder,
   `config.teacher.hf`; distill/hf_checkpoint.py).
2. One teacher-labeling pass over the validation, unlabeled, test (and
   labeled) parts, cached beside the teacher in `<teacher>/teacher_cache`,
   keyed by the part's ids and checked by fingerprint
   (`distill/teacher_cache.py`): every student and method that uses the same
   teacher reuses it.
3. The method's state is fitted on the validation part (`distill/fitting.py`):
   weights for `weighted`, alpha and k for `slam`.
4. The student trains on the unlabeled part (plus the labeled part with its
   true labels when `distill.add_labeled`) through the same train loop, with
   the teacher's outputs and the fitted state in `batch['teacher']`.
5. `<workdir>/summary.json`: teacher and student accuracies, student/teacher
   agreement, and the statistics of the fitted state.
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from core import defaults
from core.errors import ConfigError, check_choice
from distill import checkpoint as ckpt_lib
from distill import config_lib
from distill import files
from distill import hf_checkpoint
from distill import lm_cache
from distill import methods
from distill import predict
from distill import sharding
from distill import teacher_cache
from distill import train
from distill import workdir as workdir_lib
from distill.data import datasets
from distill.data import loading
from distill.data import pipeline
from distill.data import splits
import models

# What defines a dataset's examples (beyond its name), for the fingerprint.
DATASET_KEYS = ('name', 'num_samples', 'seq_len')


def distill_defaults():
  """The `config.distill` block (core/defaults.py)."""
  return defaults.distill()


def online_teacher(config, t_config, num_classes, variables=None,
                   example=None):
  """(model, variables) of the frozen teacher run inside the student's step,
  in `distill.teacher_dtype`. Without `variables`, their shapes (from
  `example` inputs) for an abstract Trainer (launch/compile_check.py)."""
  dtype = config.distill.get('teacher_dtype') or t_config.model_dtype
  check_choice('distill.teacher_dtype', dtype, models.DTYPES)
  model = models.build(t_config.model_name, num_classes, dtype,
                       **t_config.model.to_dict())
  if variables is None:
    variables = jax.eval_shape(lambda: nn.meta.unbox(model.init(
        jax.random.PRNGKey(0), example)))
    variables = {k: v for k, v in variables.items() if k != 'intermediates'}
  if config.distill.get('teacher_dtype'):
    cast = models.DTYPES[dtype]
    variables = jax.tree.map(
        lambda x: (jax.ShapeDtypeStruct(x.shape, cast) if isinstance(
            x, jax.ShapeDtypeStruct) else x.astype(cast))
        if jnp.issubdtype(x.dtype, jnp.floating) else x, variables)
  return model, variables


def hf_teacher(config):
  """The Hugging Face model folder of an imported teacher, or ''."""
  return config.teacher.get('hf') or ''


def load_hf_teacher(config, num_classes, mesh=None):
  """(model, variables) of the imported teacher (`teacher.hf`), in
  `distill.teacher_dtype`, placed on `mesh`; its vocabulary must be the
  data's."""
  dtype = config.distill.get('teacher_dtype') or 'float32'
  check_choice('distill.teacher_dtype', dtype, models.DTYPES)
  model, params = hf_checkpoint.load_hf_lm(
      hf_teacher(config), mesh, dtype=dtype, param_dtype=dtype,
      attention=config.model.get('attention', 'xla'),
      scan_layers=bool(config.model.get('scan_layers', False)))
  if model.num_classes != num_classes:
    raise ConfigError(f'teacher.hf={hf_teacher(config)} has a vocabulary of '
                      f'{model.num_classes}, the data {num_classes}: give '
                      "data.tokenizer the teacher's tokenizer")
  return model, {'params': params}


def student_config(config):
  c = ml_collections.ConfigDict(config.to_dict())
  with c.unlocked():
    del c['teacher']
    del c['distill']
  return c


def check_method(config, teacher='cached'):
  """The config's method runs with its `teacher` (its registry entry
  says: methods.TEACHER_MODES) and, cached, with its options (e.g. no
  labels for the cross-entropy of forward_kl's alpha < 1), and its
  `distill` block sets none of the
  keys that moved to method_kw (one line naming the new key)."""
  moved = [k for k in defaults.MOVED_TO_METHOD_KW if k in config.distill]
  if moved:
    raise ConfigError(
        f'distill.{moved[0]} is now method_kw.{moved[0]} (a method\'s fit '
        f'options are with its other options); set '
        f'method_kw.{moved[0]}={config.distill[moved[0]]!r}')
  methods.get(config.method).check_teacher(
      teacher, config.method_kw.to_dict(),
      config.distill.get('cache_topk', 0))


def _check(config):
  check_method(config)
  if config.data.train_on != 'unlabeled':
    raise ConfigError(f'data.train_on={config.data.train_on!r}: a student '
                      "trains on 'unlabeled' (add_labeled adds the rest)")
  if config.data.validation <= 0:
    raise ConfigError('data.validation must be > 0: the teacher statistics '
                      'are fitted on it')


def _check_teacher_data(t_config, config, data):
  """The teacher must not have trained on the student's validation or
  unlabeled examples (its statistics would be fitted on seen data)."""
  t_data = t_config.data
  if t_data.name != config.data.name:
    raise ConfigError(f'teacher data {t_data.name!r} differs from student '
                      f'data {config.data.name!r}')
  n = len(data.parts['labeled'].source)      # the whole train split
  seen = splits.carve(n, t_data.labeled, t_data.validation, t_data.unlabeled,
                      t_data.carve_seed, t_data.carve)[t_data.train_on]
  held = [data.parts['validation'].indices]
  if not _is_ood(config):
    held.append(data.parts['unlabeled'].indices)
  held = np.concatenate(held)
  overlap = np.intersect1d(seen, held)
  if len(overlap):
    raise ConfigError(
        f'the teacher trained on {len(overlap)} examples of the student\'s '
        'validation/unlabeled parts; carve the data the same way for both '
        '(data.labeled, validation, unlabeled, carve, carve_seed)')


def pretrained_note(t_config):
  """The log line of a teacher started from weights trained elsewhere
  (init.method=pretrained), or None: the data checks cover its fine-tuning
  here; its pretraining data is as declared (init.pretrained_on, recorded
  in its inputs.json) or unknown, and is not checked."""
  init = t_config.get('init')
  if not init or init.get('method') != 'pretrained':
    return None
  declared = init.get('pretrained_on') or ''
  return (f'== teacher: started from {init.weights} (pretrained on '
          f'{repr(declared) + ", as declared" if declared else "unknown data"}'
          f'; not checked): the data checks cover its fine-tuning on '
          f'{t_config.data.name!r} here')


def _teacher_outputs(config, data, parts, model, variables, step, t_dir,
                     mesh):
  """Teacher logits of each part: from the cache beside the teacher when its
  fingerprint matches, else one sharded inference pass (then cached)."""
  d = config.distill
  cache = teacher_cache.TeacherCache(os.path.join(t_dir, 'teacher_cache'))
  digest = teacher_cache.params_digest(variables)
  inputs = pipeline.Inputs(data.spec, image_size=config.data.image_size)
  logits, rebuilt = {}, []
  for name in parts:
    part = data.parts[name]
    # The teacher is its parameters (and step), wherever its workdir lives.
    fingerprint = dict(
        teacher_step=int(step), teacher_params=digest,
        part=name, dataset=_dataset_key(config, data),
        unlabeled_from=(dict(config.data.unlabeled_from.to_dict(),
                             source=data.source.get('unlabeled_from'))
                        if name == 'unlabeled' and _is_ood(config) else None),
        split='test' if name == 'test' else 'train',
        ids=teacher_cache.ids_digest(part.indices), n=len(part),
        num_classes=int(data.num_classes), topk=d.cache_topk)
    logits[name], built = cache.get_or_build(
        f'{name}-{fingerprint["ids"]}', fingerprint, part.indices,
        lambda p=part: predict.logits(model, variables, p, inputs, mesh,
                                      d.predict_batch_size),
        topk=d.cache_topk)
    if built:
      rebuilt.append(name)
  print(f'== teacher cache: rebuilt {rebuilt or "nothing"} (reused the rest)',
        flush=True)
  return logits


def _dataset_key(config, data):
  """The dataset in a teacher cache's fingerprint; your own images also
  by their files' hashes and size (another folder, another cache)."""
  out = {k: config.data.get(k) for k in DATASET_KEYS}
  if config.data.name == 'image_folder':
    out.update(source=data.source.get('source'),
               image_size=config.data.image_size)
  return out


def _is_ood(config):
  return datasets.has_unlabeled_from(config.data)


def teacher_stage(config, workdir, data):
  """(teacher config, variables, step, workdir), training it if needed."""
  t_dir = config.teacher.workdir or os.path.join(workdir, 'teacher')
  t_config = teacher_config(config)
  _check_teacher_data(t_config, config, data)
  note = pretrained_note(t_config)
  if note:
    print(note, flush=True)
  if not config.teacher.workdir:
    print(f'== teacher: training in {t_dir}', flush=True)
    if train.train(config.teacher.config, t_dir,
                   validated=True).get('preempted'):
      return None
  t_config, variables, step = ckpt_lib.load_trained(t_dir)
  return t_config, variables, step, files.abspath(t_dir)


def fit_state(config, probs_v, labels_v, probs_u):
  """Per-example state of the method on the student's training examples
  (its registered fit, with its options from method_kw; none for methods
  without one)."""
  return methods.get(config.method).fit_state(
      config.method_kw.to_dict(), probs_v, labels_v, probs_u)


def probabilities(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def stage_configs(config):
  """{stage: (config, size of the part it trains on, that part's name)} of
  the trained stages, for validation before any work."""
  sizes = datasets.part_sizes(config.data)
  d = config.distill
  out = {}
  if not config.teacher.workdir and not hf_teacher(config):
    t = config.teacher.config
    out['teacher'] = (t, datasets.part_sizes(t.data)[t.data.train_on],
                      t.data.train_on)
  student = student_config(config)
  if d.get('online') or is_lm(config):   # LMs offline: the same data
    out['student'] = (student, sizes[student.data.train_on],
                      student.data.train_on)
    return out
  n = sizes['unlabeled'] + (sizes['labeled'] if d.add_labeled else 0)
  out['student'] = (student, n, 'unlabeled' + (
      ' + labeled' if d.add_labeled else ''))
  if d.finetune_per_class:
    n = min(sizes['labeled'],
            d.finetune_per_class * datasets.num_classes(config.data))
    out['finetune'] = (finetune_config(config, n), n, 'labeled (fine-tuning)')
  return out


def check(config):
  """Validates every stage of the pipeline (teacher, fit, student) before
  any training, labeling or directory creation."""
  _check(config)
  validate_stages(config)
  check_teacher(config)


def teacher_config(config):
  """The teacher's config: its block's, or an external teacher's own."""
  return (ckpt_lib.read_config(config.teacher.workdir)
          if config.teacher.workdir else config.teacher.config)


def check_teacher(config):
  """The teacher's data is the student's and it never trained on the
  student's validation or unlabeled examples (before any directory of this
  run is made)."""
  _check_teacher_data(teacher_config(config), config,
                      loading.load_data(config.data))


def validate_stages(config):
  for stage, (cfg, size, part) in stage_configs(config).items():
    config_lib.validate_stage(cfg, size, part,
                              'teacher.config: ' if stage == 'teacher' else '')


def input_runs(config):
  """The identity of the runs this pipeline reads (an external teacher; an
  imported one: its folder, config.json and files' hashes)."""
  if hf_teacher(config):
    return {'teacher': hf_checkpoint.identity(hf_teacher(config))}
  if config.teacher.workdir:
    return {'teacher': ckpt_lib.run_identity(config.teacher.workdir)}
  return {}


def run(config, workdir):
  """The whole pipeline; returns (and writes) the summary."""
  if config.distill.get('online'):
    return run_online(config, workdir)
  if is_lm(config):
    return run_lm_offline(config, workdir)
  check(config)
  with workdir_lib.claim(workdir, config, input_runs(config)):
    return _run(config, workdir)


def _run(config, workdir):
  data = loading.load_data(config.data)
  teacher = teacher_stage(config, workdir, data)
  if teacher is None:                      # SIGTERM while training it
    return {'preempted': True}
  t_config, t_vars, t_step, t_dir = teacher
  t_model = models.build(t_config.model_name, data.num_classes,
                         t_config.model_dtype, **t_config.model.to_dict())
  mesh = sharding.stage_mesh(config)
  inputs = pipeline.Inputs(data.spec, image_size=config.data.image_size)
  d = config.distill

  parts = ['validation', 'unlabeled', 'test'] + (
      ['labeled'] if d.add_labeled else [])
  logits = _teacher_outputs(config, data, parts, t_model, t_vars, t_step,
                            t_dir, mesh)

  labels = {n: labels_of(data.parts[n]) for n in ('validation', 'test')}
  probs_v = probabilities(logits['validation'])
  probs_u = probabilities(logits['unlabeled'])
  state, stats = fit_state(config, probs_v, labels['validation'], probs_u)
  targets = {'logits': logits['unlabeled'], **state}
  train_part = data.parts['unlabeled']
  if d.add_labeled:
    train_part, targets = _with_labeled(data, train_part, targets)
  summary = {
      'method': config.method,
      'teacher/validation_accuracy': _accuracy(logits['validation'],
                                               labels['validation']),
      'teacher/test_accuracy': _accuracy(logits['test'], labels['test']),
      # The unlabeled part's true labels are read for this diagnostic only
      # (out-of-distribution examples have none).
      'teacher/unlabeled_accuracy': (
          None if _is_ood(config) else
          _accuracy(logits['unlabeled'], labels_of(data.parts['unlabeled']))),
      **{f'fit/{k}': v for k, v in stats.items()},
  }
  print('== fitted: ' + json.dumps({k: round(v, 4) for k, v in summary.items()
                                    if isinstance(v, float)}), flush=True)

  s_dir = os.path.join(workdir, 'student')
  print(f'== student ({config.method}): training in {s_dir}', flush=True)
  trainer = train.Trainer(student_config(config), s_dir, data=data,
                          train_part=datasets.WithTargets(train_part, targets),
                          validated=True)
  final = trainer.run()
  if final.get('preempted'):
    return final
  s_test = predict.logits(trainer.model, {'params': trainer.state.params,
                                          **trainer.state.model_state},
                          data.parts['test'], inputs, mesh,
                          d.predict_batch_size)
  summary.update({f'student/{k}': v for k, v in final.items()})
  if d.finetune_per_class:
    trainer, final = _finetune(config, workdir, data, s_dir)
    if final.get('preempted'):
      return final
    summary.update({f'finetuned/{k}': v for k, v in final.items()})
  summary['student/test_agreement'] = float(np.mean(
      s_test.argmax(-1) == logits['test'].argmax(-1)))
  files.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def run_online(config, workdir):
  """Online distillation (and GUIDE initialisation): the teacher trains
  first as in `run` (or is imported: `teacher.hf`), then the student trains
  on the same data with the teacher's logits computed in its train step (a
  method's fit, fitted on the validation part first, maps them to its
  state there). `method='supervised'`
  trains the student on the data alone (still GUIDE-initialised if
  `init.method='guide'`). `init.teacher=''` means this config's teacher."""
  check_method(config, 'online')
  if methods.get(config.method).fit is not None:
    _check_online_fit(config)
  validate_stages(config)
  check_choice('distill.teacher_dtype',
               config.distill.get('teacher_dtype') or 'float32', models.DTYPES)
  if hf_teacher(config):       # its data is unknown: no name or overlap check
    if config.teacher.workdir:
      raise ConfigError('teacher.hf and teacher.workdir are both set; give '
                        'one teacher')
    hf_checkpoint.build(hf_teacher(config))      # config.json's fields
  else:
    t_data = teacher_config(config).data
    if t_data.name != config.data.name:
      raise ConfigError(f'teacher data {t_data.name!r} differs from '
                        f'student data {config.data.name!r}')
  with workdir_lib.claim(workdir, config, input_runs(config)):
    if hf_teacher(config):
      return _run_online_hf(config, workdir)
    return _run_online(config, workdir)


def _check_online_fit(config):
  """A method with a fit distills online a classifier whose teacher never
  saw the validation part it is fitted on."""
  if hf_teacher(config) or 'transformer_lm' in (
      config.model_name, teacher_config(config).model_name):
    raise ConfigError(
        f'method {config.method!r} fits per-example state on a '
        "classifier's validation outputs; a language model distills online "
        'with ' + ', '.join(
            n for n in methods.names(needs_teacher=True)
            if methods.get(n).fit is None))
  if config.data.validation <= 0:
    raise ConfigError('data.validation must be > 0: the teacher statistics '
                      'are fitted on it')
  check_teacher(config)


def _online_fit(config, data, t_model, t_vars, t_step, t_dir):
  """(state_of, statistics) of the method's fit on the teacher's
  validation outputs (cached beside the teacher), or (None, {})."""
  method = methods.get(config.method)
  if method.fit is None:
    return None, {}
  mesh = sharding.stage_mesh(config)
  logits = _teacher_outputs(config, data, ['validation'], t_model, t_vars,
                            t_step, t_dir, mesh)['validation']
  labels = labels_of(data.parts['validation'])
  state_of, stats = method.fit_online(
      config.method_kw.to_dict(), probabilities(logits), labels)
  stats = {'fit/' + k: v for k, v in stats.items()}
  stats['teacher/validation_accuracy'] = _accuracy(logits, labels)
  print('== fitted on validation: ' + json.dumps(
      {k: round(v, 4) for k, v in stats.items()}), flush=True)
  return state_of, stats


def _run_online_hf(config, workdir):
  """`_run_online` with the teacher imported from `teacher.hf`."""
  data = loading.load_data(config.data)
  s_config = student_config(config)
  mesh = sharding.stage_mesh(s_config)
  t_model, t_vars = load_hf_teacher(config, data.num_classes, mesh)
  if s_config.init.method and not s_config.init.teacher:
    s_config.init.teacher = 'hf:' + files.abspath(hf_teacher(config))
  s_dir = os.path.join(workdir, 'student')
  print(f'== student ({config.method}, init {config.init.method or "own"}) '
        f'of the teacher in {hf_teacher(config)}: training in {s_dir}',
        flush=True)
  teacher = (t_model, t_vars) if config.method != 'supervised' else None
  final = train.Trainer(s_config, s_dir, data=data, teacher=teacher,
                        validated=True).run()
  if final.get('preempted'):
    return final
  summary = {'method': config.method, 'init': config.init.method or 'own',
             'teacher': files.abspath(hf_teacher(config))}
  summary.update({f'student/{k}': v for k, v in final.items()})
  files.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def _trained_teacher(config, workdir):
  """(workdir, config, variables, step) of the teacher of an online run or
  an offline LM run, trained in <workdir>/teacher when none is given (None
  when that training was preempted); its data must be the student's."""
  t_dir = config.teacher.workdir or os.path.join(workdir, 'teacher')
  if not config.teacher.workdir:
    print(f'== teacher: training in {t_dir}', flush=True)
    if train.train(config.teacher.config, t_dir,
                   validated=True).get('preempted'):
      return None
  t_config, t_vars, t_step = ckpt_lib.load_trained(t_dir)
  if t_config.data.name != config.data.name:
    raise ConfigError(f'teacher data {t_config.data.name!r} differs from '
                      f'student data {config.data.name!r}')
  return t_dir, t_config, t_vars, t_step


def _run_online(config, workdir):
  data = loading.load_data(config.data)
  teacher = _trained_teacher(config, workdir)
  if teacher is None:
    return {'preempted': True}
  t_dir, t_config, t_vars, t_step = teacher
  t_model, t_vars = online_teacher(config, t_config, data.num_classes, t_vars)
  state_of, fit_stats = _online_fit(config, data, t_model, t_vars, t_step,
                                    t_dir)
  s_config = student_config(config)
  if s_config.init.method and not s_config.init.teacher:
    s_config.init.teacher = files.abspath(t_dir)
  s_dir = os.path.join(workdir, 'student')
  print(f'== student ({config.method}, init {config.init.method or "own"}): '
        f'training in {s_dir}', flush=True)
  teacher = (t_model, t_vars) if config.method != 'supervised' else None
  trainer = train.Trainer(s_config, s_dir, data=data, teacher=teacher,
                          validated=True, teacher_state=state_of)
  final = trainer.run()
  if final.get('preempted'):
    return final
  t_final = os.path.join(t_dir, 'final_metrics.json')
  summary = {'method': config.method, 'init': config.init.method or 'own',
             **fit_stats}
  if files.exists(t_final):
    summary.update({f'teacher/{k}': v
                    for k, v in files.read_json(t_final).items()})
  summary.update({f'student/{k}': v for k, v in final.items()})
  files.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def is_lm(config):
  return config.get('model_name', '').endswith('_lm')


LM_OFFLINE_METHODS = ('vanilla', 'forward_kl', 'reverse_kl', 'jsd')


def check_lm_offline(config):
  """The offline LM path's options (one line naming the valid ones)."""
  d = config.distill
  k = d.get('cache_topk', 0)
  if config.method not in LM_OFFLINE_METHODS:
    raise ConfigError(
        f'method {config.method!r} has no offline language-model path; valid '
        f'choices: {", ".join(LM_OFFLINE_METHODS)} (or distill.online=True)')
  if not k or k < 1:
    raise ConfigError(
        'offline language-model distillation caches the teacher\'s per-token '
        'top-k: set distill.cache_topk to k >= 1 (configs/guide_lm.py:'
        'offline_topk=8), or distill.online=True')
  check_choice('distill.cache_dtype', d.get('cache_dtype', 'float32'),
               lm_cache.DTYPES)
  options = methods.get(config.method).options_of(
      config.method_kw.to_dict())[0]
  if options.get('teacher_top_k', 0) > k:
    raise ConfigError(
        f'method_kw.teacher_top_k={options["teacher_top_k"]} exceeds '
        f'distill.cache_topk={k}, the teacher tokens cached; set it to at '
        f'most {k}')
  if options.get('teacher_top_p', 1.0) < 1.0 or options.get(
      'truncation', 'renormalize') != 'renormalize':
    raise ConfigError(
        'the top-k teacher cache keeps no mass outside its k tokens: '
        'method_kw.teacher_top_p must be 1.0 and truncation renormalize '
        'offline (distill.online=True serves top_p and other_bucket)')


def run_lm_offline(config, workdir):
  """Offline distillation for language models: the teacher trains first
  (as online), one labeling pass writes its per-token top-k
  (distill.cache_topk tokens, log-probabilities in distill.cache_dtype) to
  `<teacher>/teacher_cache/<part>-top<k>-<dtype>` (distill/lm_cache.py),
  then the student trains on the same data, reading the cache by example
  id, its objective on the sparse support.

      python -m launch.main --config=configs/guide_lm.py:offline_topk=8,method=forward_kl --workdir=/tmp/lm_off
  """
  check_method(config, 'online')
  check_lm_offline(config)
  validate_stages(config)
  t_data = teacher_config(config).data
  if t_data.name != config.data.name:
    raise ConfigError(f'teacher data {t_data.name!r} differs from '
                      f'student data {config.data.name!r}')
  with workdir_lib.claim(workdir, config, input_runs(config)):
    return _run_lm_offline(config, workdir)


def _run_lm_offline(config, workdir):
  data = loading.load_data(config.data)
  teacher = _trained_teacher(config, workdir)
  if teacher is None:
    return {'preempted': True}
  t_dir, t_config, t_vars, t_step = teacher
  d = config.distill
  k, dtype = int(d.cache_topk), d.get('cache_dtype') or 'float32'
  part_name = config.data.train_on
  part = data.parts[part_name]
  t_model = models.build(t_config.model_name, data.num_classes,
                         t_config.model_dtype, **t_config.model.to_dict())
  inputs = pipeline.Inputs(data.spec, image_size=config.data.image_size)
  mesh = sharding.stage_mesh(config)
  ids = lm_cache.part_ids(part)
  meta = dict(teacher_step=int(t_step),
              teacher_params=teacher_cache.params_digest(t_vars),
              part=part_name,
              dataset={k_: config.data.get(k_) for k_ in DATASET_KEYS},
              ids=teacher_cache.ids_digest(ids), n=len(part), k=k,
              dtype=dtype, vocab=int(data.num_classes))
  cache = lm_cache.SparseCache(os.path.join(
      files.abspath(t_dir), 'teacher_cache', f'{part_name}-top{k}-{dtype}'))
  seq_len = int(np.asarray(part.get([0])['tokens']).shape[-1]) - 1
  targets, built = cache.get_or_build(
      meta, ids, lambda: predict.topk_logprobs(
          t_model, t_vars, part, inputs, mesh, d.predict_batch_size, k),
      seq_len)
  print(f'== teacher cache: {"rebuilt" if built else "reused"} '
        f'{cache.directory} ({lm_cache.bytes_per_token(k, dtype)} bytes per '
        'token)', flush=True)
  s_config = student_config(config)
  if s_config.init.method and not s_config.init.teacher:
    s_config.init.teacher = files.abspath(t_dir)
  s_dir = os.path.join(workdir, 'student')
  print(f'== student ({config.method}, offline top-{k}, init '
        f'{s_config.init.method or "own"}): training in {s_dir}', flush=True)
  trainer = train.Trainer(
      s_config, s_dir, data=data,
      train_part=lm_cache.WithSparseTeacher(part, targets), validated=True)
  final = trainer.run()
  if final.get('preempted'):
    return final
  summary = {'method': config.method, 'init': config.init.method or 'own',
             'teacher_cache/topk': k, 'teacher_cache/dtype': dtype,
             'teacher_cache/bytes_per_token': lm_cache.bytes_per_token(
                 k, dtype)}
  t_final = os.path.join(t_dir, 'final_metrics.json')
  if files.exists(t_final):
    summary.update({f'teacher/{k_}': v
                    for k_, v in files.read_json(t_final).items()})
  summary.update({f'student/{k_}': v for k_, v in final.items()})
  files.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def finetune_config(config, num_examples, student_dir=''):
  """The fine-tuning stage's config: the student, from `student_dir`, on
  `num_examples` labeled examples (no batch larger than them)."""
  d = config.distill
  c = student_config(config)
  c.method = 'supervised'
  c.data.train_on = 'labeled'
  c.init_from = student_dir
  c.total_steps, c.total_epochs = d.finetune_steps, -1.0
  c.eval_every_steps, c.eval_every_epochs = -1, -1.0
  c.optimizer.lr = d.finetune_lr
  c.schedule.warmup_steps, c.schedule.warmup_epochs = -1, -1.0
  c.batch_size = min(c.batch_size, num_examples)
  return c


def _finetune(config, workdir, data, student_dir):
  """Fine-tunes the distilled student on a few labeled examples per class."""
  d = config.distill
  labeled = data.parts['labeled']
  y = labels_of(labeled)
  rng = np.random.default_rng(config.seed)
  keep = np.sort(np.concatenate([
      rng.permutation(np.nonzero(y == c)[0])[:d.finetune_per_class]
      for c in range(data.num_classes)]))
  c = finetune_config(config, len(keep), student_dir)
  f_dir = os.path.join(workdir, 'finetuned')
  print(f'== fine-tuning on {len(keep)} labeled examples in {f_dir}',
        flush=True)
  trainer = train.Trainer(c, f_dir, data=data,
                          train_part=datasets.Subset(labeled, keep),
                          validated=True)
  return trainer, trainer.run()


def labels_of(part):
  return part.get(np.arange(len(part)))['label']


def _accuracy(logits, labels):
  return float(np.mean(np.argmax(logits, -1) == labels))


def _with_labeled(data, unlabeled, targets):
  """Appends the labeled part; its 'teacher' is the one-hot true label."""
  labeled = data.parts['labeled']
  y = labels_of(labeled)
  onehot_logits = np.where(np.eye(data.num_classes)[y] > 0, 0.0,
                           -1e4).astype(np.float32)
  extra = {'logits': onehot_logits}
  for k, v in targets.items():
    if k == 'logits':
      continue
    extra[k] = np.full(len(y), 2 if k == 'k' else 1.0, v.dtype)
  merged = {k: np.concatenate([v, extra[k]]) for k, v in targets.items()}
  return datasets.Concat([unlabeled, labeled]), merged
