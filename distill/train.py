"""The one train loop, for teachers and students (every method).

    python -m launch.main --config=configs/digits_teacher.py --workdir=/tmp/w

What a run does, in order: check the config; build the mesh, the data parts,
the model and the method; create the train state already sharded (from the
parameters' logical axis names); resume from the newest checkpoint in the
workdir if there is one; train with `jax.jit` over `NamedSharding`s,
logging (sum, count) metrics as JSONL (+ TensorBoard), evaluating and
checkpointing periodically and on SIGTERM or Ctrl-C; finally evaluate and write
`final_metrics.json`. Watching the run (finite loss, step time, MFU,
progress, profiler window) is distill/monitoring.py; SIGTERM and Ctrl-C
are distill/preemption.py; data loading is distill/data/loading.py.

Batches and dropout keys are pure functions of (seed, step), so a run that is
killed and restarted with the same command ends with the same metrics as one
that was never interrupted.
"""
import functools
import math
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from core.errors import ConfigError, EnvironmentFault
from core.errors import check_choice
from distill import checkpoint as ckpt_lib
from distill import chunked
from distill import config_lib
from distill import files
from distill import hf_checkpoint
from distill import methods
from distill import monitoring
from distill import optim
from distill import preemption
from distill import sharding
from distill import workdir as workdir_lib
from distill.data import builders
from distill.data import loading
from distill.data import pipeline
from distill.logging_utils import MetricWriter
import models
from models import transformer


# The augmentation's random stream: fold_in(PRNGKey(seed), this), then the step.
_AUGMENT_STREAM = 0x617567

# A language model's tokenizer, stored in its workdir (tokenizers.from_json).
TOKENIZER_FILE = 'tokenizer.json'

# config.init_from_state: what `init_from` takes from the other run.
INIT_FROM_STATES = config_lib.INIT_FROM_STATES


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any       # non-trainable collections, e.g. {'batch_stats': …}
  opt_state: Any
  rng: jax.Array


def _non_params(variables):
  return {k: v for k, v in variables.items()
          if k not in ('params', 'intermediates')}


def eval_metrics(logits, batch):
  """The eval step's metrics, each a (sum, count) pair: cross-entropy as
  `loss` and accuracy, over the examples (LM positions) with a label
  (-1: out-of-distribution, counted in none)."""
  labels = methods.labels_of(batch)
  weights = methods.example_weights(batch, logits) * (labels >= 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.maximum(labels, 0))
  metrics = {'loss': (jnp.sum(ce * weights), jnp.sum(weights))}
  metrics.update(methods.classification_metrics(logits, labels, weights))
  return metrics


class Trainer:
  """Holds what a run is made of; `run()` trains and returns final metrics."""

  def __init__(self, config, workdir, data=None, devices=None,
               train_part=None, teacher=None, abstract=False,
               validated=False, teacher_state=None):
    """`train_part` replaces `data.parts[config.data.train_on]`: a student's
    unlabeled examples joined with teacher targets (distill/distillation.py).
    `teacher` = (model, variables): a frozen teacher run inside the train step
    on every batch, its logits in `batch['teacher']['logits']` (online
    distillation: LMs, whose per-token outputs are too large to cache, and
    classifiers whose teacher labels each augmented view).
    `teacher_state`: with `teacher`, the method's fitted state as a
    function of the teacher's logits (methods.Method.fit_online), added to
    `batch['teacher']` in the step.
    `abstract`: the state (and teacher variables) are shapes with shardings,
    nothing is allocated: for `compile_train_step` (launch/compile_check.py).
    `validated`: the pipeline that runs this stage checked its config
    (config_lib.validate_stage), so it is not checked again here.
    """
    self.abstract = abstract
    if not validated:
      config_lib.validate(config)
    if config.get('compilation_cache_dir'):
      jax.config.update('jax_compilation_cache_dir',
                        config.compilation_cache_dir)
    self.config = config
    self.workdir = workdir
    self.mesh = sharding.stage_mesh(config, devices)
    if not validated:
      config_lib.validate_for_mesh(config, sharding.batch_shards(self.mesh),
                                   jax.process_count())
    self.data = data or loading.load_data(config.data)
    config_lib.validate_for_data(config, self.data)
    self.model = models.build(config.model_name, self.data.num_classes,
                              config.model_dtype, **config.model.to_dict())
    method = methods.get(config.method)
    self.loss_fn = method.loss_fn(config.method_kw.to_dict())
    # LMs: the loss over the sequence in chunks (distill/chunked.py; 0: off).
    self.loss_chunk = config.get('loss_chunk_len', 0)
    chunked.check(self.loss_chunk, config.model_name, method)
    if train_part is None:
      train_part = self.data.parts[config.data.train_on]
      if teacher is None:
        method.check_teacher('none')
    self.train_part = train_part
    self.teacher = teacher
    self.teacher_state = teacher_state
    self.steps_per_epoch = math.ceil(len(train_part) / config.batch_size)
    self.total_steps = config_lib.duration(config, 'total',
                                           self.steps_per_epoch)
    warmup = config_lib.duration(config.schedule, 'warmup',
                                 self.steps_per_epoch, default=0)
    self.eval_every = config_lib.duration(config, 'eval_every',
                                          self.steps_per_epoch,
                                          default=self.total_steps)
    self.tx, self.schedule = optim.make(config.optimizer, config.schedule,
                                        self.total_steps, warmup)
    self.inputs = pipeline.Inputs(self.data.spec, config.data.augment,
                                  config.data.image_size)
    self._augment_key = jax.random.fold_in(jax.random.PRNGKey(config.seed),
                                           _AUGMENT_STREAM)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self._build_state()
    self.build_steps()

  # --- state ----------------------------------------------------------------
  def _init_fn(self, rng):
    init_rng, state_rng = jax.random.split(rng)
    variables = self.model.init({'params': init_rng, 'dropout': init_rng},
                                self._example_inputs, train=False)
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      model_state=_non_params(variables),
                      opt_state=self.tx.init(params), rng=state_rng)

  def _build_state(self):
    self._example_inputs = self.inputs.device(jnp.asarray(
        self.inputs.host_eval(self.train_part.get(np.arange(1)))['inputs']))
    rng = jax.random.PRNGKey(self.config.seed)
    abstract = jax.eval_shape(self._init_fn, rng)
    self.state_sharding = sharding.shardings_from_boxed(abstract, self.mesh)
    if self.abstract:
      self.state = ckpt_lib.abstract_like(nn.meta.unbox(abstract),
                                          self.state_sharding)
      return
    init = jax.jit(lambda r: nn.meta.unbox(self._init_fn(r)),
                   out_shardings=self.state_sharding)
    with jax.set_mesh(self.mesh):
      self.state = init(rng)

  # --- steps ----------------------------------------------------------------
  def _apply(self, params, model_state, inputs, train, rng=None, **kw):
    variables = {'params': params, **model_state}
    if train:
      return self.model.apply(variables, inputs, train=True,
                              mutable=list(model_state),
                              rngs={'dropout': rng}, **kw)
    return self.model.apply(variables, inputs, train=False, **kw), model_state

  def step_function(self, state, batch, teacher_vars=None):
    with sharding.activation_rules():
      return self._train_step_body(state, batch, teacher_vars)

  def _train_step_body(self, state, batch, teacher_vars):
    rng = jax.random.fold_in(state.rng, state.step)
    inputs = self.inputs.device(batch['inputs'], jax.random.fold_in(
        self._augment_key, state.step))         # augmented on the device
    if self.loss_chunk:
      return self._chunked_step_body(state, batch, teacher_vars, rng, inputs)
    if teacher_vars is not None:
      t_logits = self.teacher[0].apply(teacher_vars, inputs, train=False)
      t_logits = jax.lax.stop_gradient(t_logits)
      state_of = self.teacher_state or (lambda _: {})
      batch = dict(batch, teacher={'logits': t_logits, **state_of(t_logits)})

    def loss_of(params):
      out, new_model_state = self._apply(params, state.model_state, inputs,
                                         True, rng)
      loss, metrics = self.loss_fn(out, batch.get('teacher'), batch)
      return loss, (metrics, new_model_state)

    return self._update(state, loss_of)

  def _chunked_step_body(self, state, batch, teacher_vars, rng, inputs):
    """The train step with the loss over the sequence in chunks of
    config.loss_chunk_len positions, each chunk's logits computed inside
    the loop from the models' final hidden states (distill/chunked.py)."""
    teacher = batch.get('teacher')
    if teacher_vars is not None:
      t_model = self.teacher[0]
      t_hidden, t_head = jax.lax.stop_gradient(
          t_model.apply(teacher_vars, inputs, train=False, hidden=True))
      teacher = (t_hidden, t_head,
                 functools.partial(transformer.project, t_model))

    def loss_of(params):
      (hidden, head), new_model_state = self._apply(
          params, state.model_state, inputs, True, rng, hidden=True)
      student = (hidden, head, functools.partial(transformer.project,
                                                 self.model))
      loss, metrics = chunked.loss(self.loss_fn, student, teacher, batch,
                                   self.loss_chunk)
      return loss, (metrics, new_model_state)

    return self._update(state, loss_of)

  def _update(self, state, loss_of):
    """The step's gradient of `loss_of(params) -> (loss, (metrics, model
    state))` and its optimizer update."""
    (_, (metrics, model_state)), grads = jax.value_and_grad(
        loss_of, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p + u, state.params, updates)
    metrics['grad_norm'] = (optax.tree.norm(grads), jnp.ones(()))
    metrics['lr'] = (self.schedule(state.step).astype(jnp.float32),
                     jnp.ones(()))
    return state.replace(step=state.step + 1, params=params,
                         model_state=model_state, opt_state=opt_state), metrics

  def _eval_step(self, params, model_state, batch):
    inputs = self.inputs.device(batch['inputs'])
    with sharding.activation_rules():
      if self.loss_chunk:       # an LM's logits a chunk of positions at once
        (hidden, head), _ = self._apply(params, model_state, inputs, False,
                                        hidden=True)
        student = (hidden, head, functools.partial(transformer.project,
                                                   self.model))
        _, metrics = chunked.loss(
            lambda logits, _, chunk: (None, eval_metrics(logits, chunk)),
            student, None, batch, self.loss_chunk)
        return metrics
      logits, _ = self._apply(params, model_state, inputs, False)
    return eval_metrics(logits, batch)

  def build_steps(self):
    rep = sharding.replicated(self.mesh)
    self._teacher_args = ()
    if self.teacher is None:
      self.train_step = self._train_step_jit = jax.jit(
          self.step_function, in_shardings=(self.state_sharding,
                                          self.batch_sharding),
          out_shardings=(self.state_sharding, rep), donate_argnums=0)
    else:
      t_model, t_vars = self.teacher
      t_abstract = jax.eval_shape(lambda: t_model.init(
          jax.random.PRNGKey(0), self._example_inputs))
      t_shardings = sharding.shardings_from_boxed(t_abstract, self.mesh)
      t_shardings = {k: t_shardings[k] for k in (t_vars or ('params',))}
      if self.abstract:               # shapes and dtypes, given or the init's
        t_vars = ckpt_lib.abstract_like(
            t_vars if t_vars else nn.meta.unbox(
                {k: t_abstract[k] for k in t_shardings}), t_shardings)
      else:
        t_vars = jax.device_put(t_vars, t_shardings)
      step = self._train_step_jit = jax.jit(
          self.step_function, in_shardings=(self.state_sharding,
                                          self.batch_sharding, t_shardings),
          out_shardings=(self.state_sharding, rep), donate_argnums=0)
      self._teacher_args = (t_vars,)
      self.teacher_variables = t_vars
      self.train_step = lambda state, batch: step(state, batch, t_vars)
    self.eval_step = jax.jit(
        self._eval_step, in_shardings=(self.state_sharding.params,
                                       self.state_sharding.model_state,
                                       self.batch_sharding),
        out_shardings=rep)

  def batch_shapes(self):
    """The global train batch as ShapeDtypeStructs with the batch sharding
    (shapes from one preprocessed example of the train part)."""
    one = self.inputs.host_train(self.train_part.get(np.arange(1)),
                                 np.random.default_rng(0))
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            (self.config.batch_size,) + np.shape(x)[1:], np.asarray(x).dtype,
            sharding=self.batch_sharding), one)

  def compile_train_step(self):
    """Lowers and compiles the train step for this mesh without running it
    (works on an abstract Trainer); returns the compiled executable."""
    state = self.state if self.abstract else ckpt_lib.abstract_like(
        self.state, self.state_sharding)
    with jax.set_mesh(self.mesh):
      return self._train_step_jit.lower(state, self.batch_shapes(),
                                        *self._teacher_args).compile()

  # --- evaluation -------------------------------------------------------------
  def evaluate(self, names):
    out = {}
    for name in names:
      part = self.data.parts[name]
      if not len(part):
        continue
      totals = None
      for batch in pipeline.eval_batches(part, self.config.eval_batch_size,
                                         self.inputs.host_eval,
                                         jax.process_index(),
                                         jax.process_count()):
        batch = sharding.put_batch(batch, self.batch_sharding)
        with jax.set_mesh(self.mesh):
          m = self.eval_step(self.state.params, self.state.model_state, batch)
        totals = m if totals is None else jax.tree.map(jnp.add, totals, m)
      for k, (s, c) in jax.device_get(totals).items():
        if float(c) > 0:          # else: no example with a label
          out[f'{name}/{k}'] = float(s) / float(c)
    return out

  def input_runs(self):
    """The identity of what this run reads besides its config: the data's
    source (prepared files' hashes, a language model's tokenizer) and the
    other runs it starts from (workdir.claim compares it on a rerun)."""
    out = {'data': self.data.source} if self.data.source else {}
    if self.config.get('init_from'):
      ref, step = ckpt_lib.parse_run_ref(self.config.init_from)
      out['init_from'] = ckpt_lib.run_identity(ref, step)
    init = self.config.get('init')
    if init and init.method == 'pretrained':
      from models import resnet_weights  # pylint: disable=g-import-not-at-top
      out['init_weights'] = builders.content_hashes(builders.source_files(
          resnet_weights.weights_file(init.weights)))[0]
      if init.get('pretrained_on'):     # declared, not checked
        out['init_weights']['pretrained_on'] = init.pretrained_on
    elif init and init.method and init.teacher:
      hf = hf_checkpoint.hf_ref(init.teacher)
      out['init_teacher'] = (hf_checkpoint.identity(hf) if hf else
                             ckpt_lib.run_identity(init.teacher))
    return out

  def check_init_from(self):
    """`init_from`'s checkpoint exists and its saved shapes fit this run's
    state (parameters and model state; everything for init_from_state=all),
    checked from its metadata before this run's workdir is touched; so is
    GUIDE's teacher (`init`)."""
    ref = self.config.get('init_from')
    init = self.config.get('init')
    if not ref and init and init.method == 'pretrained':
      self._pretrained = self.pretrained_variables(init)
    elif not ref and init and init.method:
      self.check_init_teacher(init)
    if not ref:
      return
    what = self.config.get('init_from_state', 'params')
    workdir, step = ckpt_lib.parse_run_ref(ref)
    ckpt_lib.read_config(workdir)
    if not ckpt_lib.steps_of(workdir):
      raise ConfigError(f'init_from={ref}: no checkpoint in {workdir}')
    theirs = ckpt_lib.saved_shapes(workdir, step)
    ours = {ckpt_lib.path_name(p): tuple(leaf.shape) for p, leaf in
            jax.tree_util.tree_leaves_with_path(self.state)}
    parts = ('params/', 'model_state/') if what == 'params' else ('',)
    order = ('params/', 'model_state/', 'opt_state/')

    def rank(path):      # parameters first: the most telling difference
      return next((i for i, o in enumerate(order) if path.startswith(o)),
                  len(order)), path

    for path in sorted(set(theirs) | set(ours), key=rank):
      if not path.startswith(parts):
        continue
      a, b = theirs.get(path, 'absent'), ours.get(path, 'absent')
      if a != b:
        raise ConfigError(
            f'init_from={ref}: {path} is {a} there, {b} here; '
            + ('init_from_state=params takes only the parameters'
               if what == 'all' else 'give a run of the same model'))

  def init_from(self, ref, what='params'):
    """Starts from another run's checkpoint, `ref` = 'WORKDIR[:STEP]'
    (default its newest readable step). what='params': its parameters and
    model state, a fresh optimizer at step 0 (fine-tuning); 'all': its whole
    train state (optimizer, step, RNG; the data position follows the step),
    to continue that run with changed settings, e.g. a lower learning rate
    after it diverged. Returns the step to start at. That run's files are
    only read."""
    check_choice('init_from_state', what, INIT_FROM_STATES)
    workdir, step = ckpt_lib.parse_run_ref(ref)
    if what == 'params':
      _, variables, step = ckpt_lib.load_trained(workdir, step)
      params = variables.pop('params')      # shapes: check_init_from
      self.state = self.state.replace(
          params=jax.device_put(params, self.state_sharding.params),
          model_state=jax.device_put(variables,
                                     self.state_sharding.model_state))
      print(f'Initialised from {workdir} (step {step}).', flush=True)
      return 0
    other = ckpt_lib.Checkpointer(workdir, read_only=True)
    try:
      target = ckpt_lib.abstract_like(self.state, self.state_sharding)
      step, state, _ = other.restore_latest_good(target, max_step=step)
    finally:
      other.close()
    if step is None:
      raise EnvironmentFault(f'init_from={ref}: no readable checkpoint in '
                             f'{other.directory}')
    self.state = state
    print(f'Continuing {workdir} from its step {step} with this config.',
          flush=True)
    return int(step)

  def pretrained_variables(self, init_cfg):
    """(params, batch_stats) of a ResNet checkpoint (init.weights, read by
    models/resnet_weights.py) for this model, checked before this run's
    workdir is touched; the head is this model's own where init.head says
    so or the class count differs."""
    from models import resnet_weights  # pylint: disable=g-import-not-at-top
    state = jax.device_get({'params': self.state.params,
                            **self.state.model_state})
    variables, took_head = resnet_weights.load(
        init_cfg.weights, state, init_cfg.get('head') or 'auto')
    print(f'Pretrained weights {init_cfg.weights}: '
          + ('with their head' if took_head else
             f'a new {self.data.num_classes}-class head'), flush=True)
    return variables

  def init_from_weights(self, init_cfg):
    """Starts from a pretrained checkpoint (`pretrained_variables`): its
    parameters and batch-norm statistics, a fresh optimizer at step 0."""
    variables = getattr(self, '_pretrained', None) or (
        self.pretrained_variables(init_cfg))
    params = jax.device_put(variables['params'], self.state_sharding.params)
    model_state = jax.device_put({'batch_stats': variables['batch_stats']},
                                 self.state_sharding.model_state)
    with jax.set_mesh(self.mesh):
      opt_state = jax.jit(self.tx.init, out_shardings=(
          self.state_sharding.opt_state))(params)
    self.state = self.state.replace(params=params, model_state=model_state,
                                    opt_state=opt_state)
    self._pretrained = None

  def check_init_teacher(self, init_cfg):
    """GUIDE's teacher fits this student (its config read, before this
    run's workdir is touched)."""
    if init_cfg.method != 'guide':
      raise ConfigError(f'init.method={init_cfg.method!r}; valid choices: '
                        "'' (the model's own init), guide")
    if self.config.model_name != 'transformer_lm':
      raise ConfigError('init.method=guide projects Transformer LMs; '
                        f'model is {self.config.model_name!r}')
    if not init_cfg.teacher:
      raise ConfigError('init.method=guide needs init.teacher (a trained '
                        "teacher workdir, or 'hf:' and a Hugging Face model "
                        'folder)')
    from distill import guide  # pylint: disable=g-import-not-at-top
    hf = hf_checkpoint.hf_ref(init_cfg.teacher)
    if hf:
      t_model = hf_checkpoint.build(hf)[0]
      if self.config.model.get('positions', 'learned') != 'rope':
        raise ConfigError(f'init.teacher={init_cfg.teacher} uses rotary '
                          "positions: set model.positions='rope'")
      guide.check_family(t_model, models.build(
          'transformer_lm', t_model.num_classes,
          **self.config.model.to_dict()))
      return
    t_config = ckpt_lib.read_config(init_cfg.teacher)
    if t_config.model_name != 'transformer_lm':
      raise ConfigError(f'init.teacher={init_cfg.teacher} is a '
                        f'{t_config.model_name!r}, not a transformer_lm')
    positions = self.config.model.get('positions', 'learned')
    if t_config.model.get('positions', 'learned') != positions:
      raise ConfigError('init.method=guide: teacher and student must use the '
                        'same model.positions')
    guide.check_family(
        models.build('transformer_lm', 2, **t_config.model.to_dict()),
        models.build('transformer_lm', 2, **self.config.model.to_dict()))

  def init_from_teacher(self, init_cfg):
    """GUIDE: the student's parameters projected from a trained teacher's
    (distill/guide.py); jitted, output sharded like the student's state."""
    from distill import guide  # pylint: disable=g-import-not-at-top
    self.check_init_teacher(init_cfg)
    hf = hf_checkpoint.hf_ref(init_cfg.teacher)
    if hf:
      t_params = hf_checkpoint.load_hf_lm(hf, self.mesh)[1]
      step = 'imported'
    else:
      _, variables, step = ckpt_lib.load_trained(init_cfg.teacher)
      t_params = variables['params']
    positions = self.config.model.get('positions', 'learned')
    guide.check_compatible(t_params, self.state.params, positions)
    project = jax.jit(functools.partial(
        guide.project, positions=positions,
        preserve_logit_scale=init_cfg.preserve_logit_scale,
        plus_one=bool(self.config.model.get('norm_plus_one', False))),
                      out_shardings=self.state_sharding.params)
    with jax.set_mesh(self.mesh):
      params = project(t_params, self.state.params)
      opt_state = jax.jit(self.tx.init, out_shardings=(
          self.state_sharding.opt_state))(params)
    self.state = self.state.replace(params=params, opt_state=opt_state)
    print(f'GUIDE: initialised from the teacher in {init_cfg.teacher} '
          f'(step {step}).', flush=True)

  # --- the loop ---------------------------------------------------------------
  def run(self):
    """Trains to `total_steps` holding the workdir (distill/workdir.py);
    returns the final metrics, or {'preempted': True, ...} after SIGTERM or
    Ctrl-C."""
    self.check_init_from()
    with workdir_lib.claim(self.workdir, self.config, self.input_runs()):
      return self._run()

  def _resume(self, checkpointer):
    """(start step, extra): the newest readable checkpoint of this workdir,
    else `init_from` / `init`, else step 0."""
    config = self.config
    extra = {'data': {'next_step': 0}, 'chrono': {'train_seconds': 0.0},
             'metrics': {'records': 0}}
    if checkpointer.latest_step() is not None:
      target = ckpt_lib.abstract_like(self.state, self.state_sharding)
      step, state, restored = checkpointer.restore_latest_good(target)
      if step is not None:
        self.state = state
        start = int(jax.device_get(self.state.step))
        if restored['data']['next_step'] != start:
          raise RuntimeError(f'checkpoint at step {start} holds data position '
                             f'{restored["data"]["next_step"]}')
        print(f'Resumed from {checkpointer.directory} at step {start}.',
              flush=True)
        # a checkpoint without a record count keeps the records up to `start`
        return start, {**extra, 'metrics': {'records': None}, **restored}
    start = 0
    if config.get('init_from'):
      start = self.init_from(config.init_from,
                             config.get('init_from_state', 'params'))
      extra['data']['next_step'] = start
    elif config.get('init') and config.init.method == 'pretrained':
      self.init_from_weights(config.init)
    elif config.get('init') and config.init.method:
      self.init_from_teacher(config.init)
    return start, extra

  def _run(self):
    config, workdir = self.config, self.workdir
    is_main = jax.process_index() == 0
    if self.data.tokenizer is not None:   # read checkpoints with this vocab
      files.write_json(os.path.join(workdir, TOKENIZER_FILE),
                       self.data.tokenizer.to_json())
    checkpointer = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints)
    checkpointer.remove_partial()          # of a save a crash interrupted
    start, extra = self._resume(checkpointer)
    # Records written after the checkpoint resumed from are written again.
    writer = MetricWriter(workdir, config.tensorboard and is_main,
                          enabled=is_main, keep_records=extra['metrics'].get(
                              'records', None), resumed_step=start)
    host_batches = pipeline.train_batches(
        self.train_part, config.batch_size, self.inputs.host_train,
        seed=config.seed, start_step=start,
        process_index=jax.process_index(), process_count=jax.process_count(),
        workers=config.data.get('workers', 0), prefetch=config.data.prefetch)
    batches = pipeline.device_prefetch(
        host_batches, lambda b: sharding.put_batch(b, self.batch_sharding),
        size=config.data.get('device_prefetch', 2))
    preempted = preemption.Preemption()
    speed = monitoring.Speed(self)
    profile = monitoring.Profile(config.get('profile_steps', (0, 0)),
                                 workdir)
    train_seconds = extra['chrono']['train_seconds']
    pending = []
    step = start
    eval_names = config_lib.eval_names(config)
    finished = aborted = False
    try:
      while step < self.total_steps:
        profile.before(step)
        batch = next(batches)
        with jax.set_mesh(self.mesh):
          self.state, metrics = self.train_step(self.state, batch)
        pending.append(metrics)
        step += 1
        speed.stepped(step == start + 1, metrics)
        profile.after(step, self.state)
        last = step == self.total_steps
        stop = preempted.reached(step)
        saving = step % config.checkpoint_every_steps == 0 or last or stop
        if step % config.log_every_steps == 0 or last or saving:
          monitoring.check_finite(pending, step, checkpointer)
        if step % config.log_every_steps == 0 or last:
          logs = monitoring.reduce_window(pending)
          pending = []
          timing = speed.window()
          train_seconds += timing.pop('seconds')
          logs.update(timing)
          writer.write(step, logs)
          if config.progress and is_main:
            print(monitoring.progress_line(step, self.total_steps, logs),
                  flush=True)
        if step % self.eval_every == 0 and not last:
          with speed.paused():
            writer.write(step, self.evaluate(eval_names))
        if saving:
          extra = {'data': {'next_step': step, 'seed': config.seed,
                            'num_examples': len(self.train_part)},
                   'chrono': {'train_seconds': train_seconds},
                   'metrics': {'records': writer.records}}
          checkpointer.save(step, self.state, extra, force=True)
        if stop:
          checkpointer.wait()
          print(f'{preempted.signal_name}: saved a checkpoint at step '
                f'{step}; exiting.', flush=True)
          finished = True
          return {'preempted': True, 'step': step}
      final = self.evaluate(eval_names)
      final.update(step=step, train_seconds=train_seconds)
      writer.write(step, final)
      files.write_json(os.path.join(workdir, 'final_metrics.json'), final)
      finished = True
      return final
    except KeyboardInterrupt:
      aborted = True        # a second Ctrl-C: no waiting for a save
      raise
    finally:
      profile.close()
      pipeline.close(host_batches)
      preempted.restore()
      writer.close()
      try:
        if not aborted:
          checkpointer.close()
      except EnvironmentFault:
        if finished:        # else the fault in flight is the one to report
          raise


def train(config, workdir, **kwargs):
  """Trains per `config` in `workdir` (resuming if possible)."""
  return Trainer(config, workdir, **kwargs).run()

