"""Optimizers and learning-rate schedules from the config, by name.

    tx, schedule = optim.make(config.optimizer, config.schedule, total_steps,
                              warmup_steps)

Weight decay applies to kernels only (ndim > 1), never to biases, norms or
scalars (LAuReL's alpha, beta, gamma). `optimizer.frozen` names top-level
parameter collections that never change (comma-separated, e.g. 'embed' for
GUIDE's frozen teacher table).
"""
import jax
import optax

from core.errors import check_choice

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'linear')


def make_schedule(cfg, base, total_steps, warmup_steps):
  """Warmup (linear from 0) then `cfg.name` decay from `base` to the end."""
  check_choice('schedule.name', cfg.name, SCHEDULES)
  end = base * cfg.get('end_lr_factor', 0.0)
  decay = max(1, total_steps - warmup_steps)
  if cfg.name == 'constant':
    main = optax.constant_schedule(base)
  elif cfg.name == 'cosine':
    main = optax.cosine_decay_schedule(base, decay, alpha=end / base if base
                                       else 0.0)
  else:
    main = optax.linear_schedule(base, end, decay)
  if warmup_steps <= 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup_steps), main], [warmup_steps])


def _kernel_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make(opt_cfg, sched_cfg, total_steps, warmup_steps):
  """Returns (optax transformation, learning-rate schedule)."""
  check_choice('optimizer.name', opt_cfg.name, OPTIMIZERS)
  schedule = make_schedule(sched_cfg, opt_cfg.lr, total_steps, warmup_steps)
  parts = []
  if opt_cfg.get('grad_clip', 0.0):
    parts.append(optax.clip_by_global_norm(opt_cfg.grad_clip))
  wd = opt_cfg.get('weight_decay', 0.0)
  if opt_cfg.name == 'sgd':
    if wd:
      parts.append(optax.add_decayed_weights(wd, mask=_kernel_mask))
    parts.append(optax.sgd(schedule, momentum=opt_cfg.get('momentum', 0.9) or
                           None, nesterov=opt_cfg.get('nesterov', False)))
  elif opt_cfg.name == 'adam':
    if wd:
      parts.append(optax.add_decayed_weights(wd, mask=_kernel_mask))
    parts.append(optax.adam(schedule, b1=opt_cfg.get('b1', 0.9),
                            b2=opt_cfg.get('b2', 0.999)))
  else:
    parts.append(optax.adamw(schedule, b1=opt_cfg.get('b1', 0.9),
                             b2=opt_cfg.get('b2', 0.999), weight_decay=wd,
                             mask=_kernel_mask))
  tx = optax.chain(*parts)
  frozen = [f.strip() for f in opt_cfg.get('frozen', '').split(',')
            if f.strip()]
  if frozen:
    def labels(params):
      return {k: jax.tree.map(lambda _, k=k: 'frozen' if k in frozen
                              else 'train', v) for k, v in params.items()}
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                               labels)
  return tx, schedule
