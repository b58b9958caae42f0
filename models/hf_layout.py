"""The Hugging Face layout of `TransformerLM`: which config.json fields set
which model fields, and which safetensors tensor holds which parameter.
Pure mapping, no file access (reading and writing: distill/hf_checkpoint.py).

    kwargs, vocab = hf_layout.model_kwargs(json.load(open('config.json')))
    for path, name, kind in hf_layout.tensors(kwargs): ...

Families (config.json `model_type`): llama (3.x, with `rope_scaling` type
llama3), qwen2 (QKV bias), qwen3 (QK-norm), gemma2 (GeGLU, (1 + scale)
RMSNorm, pre and post norms, sqrt(d) embedding scale, soft-capping,
sliding window on even layers, query_pre_attn_scalar). A field this model
cannot express is a one-line ConfigError naming it.

A parameter `path` is relative to one block (`('attn', 'query', 'kernel')`,
with its layer given apart) or to the model (`('embed', 'embedding')`).
`kind` says how the tensor is laid out against the flax parameter:
  'same'    the same array (embedding tables, norm gains);
  'dense'   a (out, in) torch Linear weight, the flax (in, out) kernel's
            transpose;
  'heads'   a (heads * head_dim, width) weight, the flax (width, heads,
            head_dim) kernel's transpose, reshaped;
  'out'     a (width, heads * head_dim) weight, the flax (heads, head_dim,
            width) kernel's transpose, reshaped;
  'bias'    a (heads * head_dim,) bias of the flax (heads, head_dim) one.
"""
import numpy as np

from core.errors import ConfigError

FAMILIES = ('gemma2', 'llama', 'qwen2', 'qwen3')
# config.json fields of models outside this space (mixtures of experts).
_MOE_FIELDS = ('num_experts', 'num_local_experts', 'n_routed_experts',
               'moe_intermediate_size', 'num_experts_per_tok',
               'decoder_sparse_step', 'n_shared_experts')
_GATES = {'silu': 'swiglu', 'swish': 'swiglu', 'gelu_pytorch_tanh': 'geglu',
          'gelu_new': 'geglu', 'gelu_fast': 'geglu'}
_ROPE_TYPES = ('default', 'llama3')


def _refuse(field, value, why):
  raise ConfigError(f'Hugging Face config field {field}={value!r} is not '
                    f'supported: {why}')


def _rope(cfg):
  """(theta, rope fields) from `rope_parameters` (transformers >= 5) or
  `rope_theta` and `rope_scaling` (older files)."""
  params = dict(cfg.get('rope_parameters') or {})
  field = 'rope_parameters'
  if not params and cfg.get('rope_scaling'):
    params, field = dict(cfg['rope_scaling']), 'rope_scaling'
  theta = float(params.get('rope_theta', cfg.get('rope_theta', 10000.0)))
  kind = params.get('rope_type', params.get('type', 'default'))
  if kind not in _ROPE_TYPES:
    _refuse(f'{field}.rope_type', kind,
            f'valid choices: {", ".join(_ROPE_TYPES)}')
  out = dict(rope_theta=theta)
  if kind == 'llama3':
    out.update(rope_scaling='llama3', rope_factor=float(params['factor']),
               rope_low_freq_factor=float(params['low_freq_factor']),
               rope_high_freq_factor=float(params['high_freq_factor']),
               rope_original_max_len=int(
                   params['original_max_position_embeddings']))
  return out


def model_kwargs(cfg):
  """(TransformerLM kwargs, vocabulary size) of a config.json dict."""
  family = cfg.get('model_type')
  if family not in FAMILIES:
    raise ConfigError(f'unknown Hugging Face model_type {family!r}; valid '
                      f'choices: {", ".join(FAMILIES)}')
  for field in _MOE_FIELDS:
    if cfg.get(field):
      _refuse(field, cfg[field], 'mixtures of experts are out of scope')
  heads = int(cfg['num_attention_heads'])
  width = int(cfg['hidden_size'])
  kw = dict(num_layers=int(cfg['num_hidden_layers']), width=width,
            num_heads=heads,
            num_kv_heads=int(cfg.get('num_key_value_heads') or heads),
            head_dim=int(cfg.get('head_dim') or width // heads),
            mlp_dim=int(cfg['intermediate_size']),
            max_len=int(cfg.get('max_position_embeddings', 2048)),
            positions='rope', norm_eps=float(cfg.get('rms_norm_eps', 1e-6)),
            tie_embeddings=bool(cfg.get('tie_word_embeddings',
                                        family == 'gemma2')))
  act_field = 'hidden_activation' if family == 'gemma2' else 'hidden_act'
  act = cfg.get(act_field) or cfg.get('hidden_act') or 'silu'
  if act not in _GATES:
    _refuse(act_field, act, f'valid choices: {", ".join(sorted(_GATES))}')
  kw['mlp'] = _GATES[act]
  kw.update(_rope(cfg))
  if cfg.get('attention_bias') and family != 'qwen2':
    _refuse('attention_bias', True, 'only Q, K and V biases (qwen2) exist '
            'here, not an output-projection bias')
  if cfg.get('mlp_bias'):
    _refuse('mlp_bias', True, 'gated MLPs here have no biases')
  if cfg.get('use_sliding_window'):
    _refuse('use_sliding_window', True, 'only gemma2 has sliding layers here')
  if family == 'qwen2':
    kw['qkv_bias'] = True
  elif family == 'qwen3':
    kw['qk_norm'] = True
  elif family == 'gemma2':
    kw.update(norm_plus_one=True, post_norms=True, embed_scale=True,
              query_pre_attn_scalar=float(cfg.get('query_pre_attn_scalar')
                                          or kw['head_dim']),
              attn_softcap=float(cfg.get('attn_logit_softcapping') or 0.0),
              logit_softcap=float(cfg.get('final_logit_softcapping') or 0.0))
    window = int(cfg.get('sliding_window') or 0)
    types = cfg.get('layer_types')
    even = ['sliding_attention' if i % 2 == 0 else 'full_attention'
            for i in range(kw['num_layers'])]
    if window and types and list(types) != even:
      _refuse('layer_types', types, 'sliding layers here are the even '
              'ones (0, 2, ...), as in Gemma 2')
    kw['sliding_window'] = window
  return kw, int(cfg['vocab_size'])


def family_of(kw):
  """The model_type a TransformerLM's kwargs are written as (one line if
  they are not a supported family's)."""
  problems = []
  if kw.get('positions') != 'rope':
    problems.append("model.positions must be 'rope'")
  if kw.get('mlp', 'gelu') == 'gelu':
    problems.append("model.mlp must be 'swiglu' or 'geglu'")
  for key, default in (('residual', 'standard'), ('embed_from', 0)):
    if kw.get(key, default) != default:
      problems.append(f'model.{key} must be {default!r}')
  if problems:
    raise ConfigError('not a Hugging Face family (llama, qwen2, qwen3, '
                      'gemma2): ' + '; '.join(problems))
  if kw.get('norm_plus_one'):
    return 'gemma2'
  if kw.get('qk_norm'):
    return 'qwen3'
  return 'qwen2' if kw.get('qkv_bias') else 'llama'


def hf_config(kw, vocab):
  """The config.json dict of a TransformerLM's kwargs (`family_of`)."""
  family = family_of(kw)
  heads = kw['num_heads']
  head_dim = kw.get('head_dim') or kw['width'] // heads
  rope = {'rope_type': 'default', 'rope_theta': kw.get('rope_theta', 1e4)}
  if kw.get('rope_scaling') == 'llama3':
    rope.update(rope_type='llama3', factor=kw['rope_factor'],
                low_freq_factor=kw['rope_low_freq_factor'],
                high_freq_factor=kw['rope_high_freq_factor'],
                original_max_position_embeddings=kw['rope_original_max_len'])
  cfg = dict(
      model_type=family, architectures=[_ARCHITECTURES[family]],
      vocab_size=vocab, hidden_size=kw['width'],
      intermediate_size=kw['mlp_dim'], num_hidden_layers=kw['num_layers'],
      num_attention_heads=heads,
      num_key_value_heads=kw.get('num_kv_heads') or heads,
      head_dim=head_dim, max_position_embeddings=kw.get('max_len', 2048),
      rms_norm_eps=kw.get('norm_eps', 1e-6),
      tie_word_embeddings=bool(kw.get('tie_embeddings')),
      rope_parameters=rope, attention_bias=False, dtype='float32')
  act = 'silu' if kw['mlp'] == 'swiglu' else 'gelu_pytorch_tanh'
  cfg['hidden_activation' if family == 'gemma2' else 'hidden_act'] = act
  if family == 'gemma2':
    window = kw.get('sliding_window', 0)
    cfg.update(
        hidden_act=act,
        query_pre_attn_scalar=_int_if_whole(
            kw.get('query_pre_attn_scalar') or head_dim),
        attn_logit_softcapping=kw.get('attn_softcap') or None,
        final_logit_softcapping=kw.get('logit_softcap') or None,
        sliding_window=window or None,
        layer_types=['sliding_attention' if window and i % 2 == 0 else
                     'full_attention' for i in range(kw['num_layers'])])
    if not (kw.get('post_norms') and kw.get('embed_scale')):
      raise ConfigError('a gemma2 model needs model.post_norms and '
                        'model.embed_scale')
  return cfg


def _int_if_whole(x):
  return int(x) if float(x).is_integer() else x


_ARCHITECTURES = {'llama': 'LlamaForCausalLM', 'qwen2': 'Qwen2ForCausalLM',
                  'qwen3': 'Qwen3ForCausalLM', 'gemma2': 'Gemma2ForCausalLM'}


def tensors(kw):
  """[(flax path, layer or None, tensor name, kind)] of every parameter of
  a TransformerLM with kwargs `kw` (layers unrolled; see the module
  docstring)."""
  out = [(('embed', 'embedding'), None, 'model.embed_tokens.weight', 'same'),
         (('final_norm', 'scale'), None, 'model.norm.weight', 'same')]
  if not kw.get('tie_embeddings'):
    out.append((('head', 'dense', 'kernel'), None, 'lm_head.weight', 'dense'))
  gemma = family_of(kw) == 'gemma2'
  for i in range(kw['num_layers']):
    pre = f'model.layers.{i}.'
    rows = [(('norm1', 'scale'), 'input_layernorm.weight', 'same'),
            (('norm2', 'scale'), ('pre_feedforward_layernorm.weight' if gemma
                                  else 'post_attention_layernorm.weight'),
             'same'),
            (('attn', 'out', 'kernel'), 'self_attn.o_proj.weight', 'out'),
            (('mlp_gate', 'dense', 'kernel'), 'mlp.gate_proj.weight',
             'dense'),
            (('mlp_in', 'dense', 'kernel'), 'mlp.up_proj.weight', 'dense'),
            (('mlp_out', 'dense', 'kernel'), 'mlp.down_proj.weight',
             'dense')]
    for name, short in (('query', 'q'), ('key', 'k'), ('value', 'v')):
      rows.append((('attn', name, 'kernel'), f'self_attn.{short}_proj.weight',
                   'heads'))
      if kw.get('qkv_bias'):
        rows.append((('attn', name, 'bias'), f'self_attn.{short}_proj.bias',
                     'bias'))
    if kw.get('qk_norm'):
      rows += [(('attn', 'query_norm', 'scale'), 'self_attn.q_norm.weight',
                'same'),
               (('attn', 'key_norm', 'scale'), 'self_attn.k_norm.weight',
                'same')]
    if kw.get('post_norms'):
      rows += [(('post_norm1', 'scale'), 'post_attention_layernorm.weight',
                'same'),
               (('post_norm2', 'scale'), 'post_feedforward_layernorm.weight',
                'same')]
    out += [(path, i, pre + name, kind) for path, name, kind in rows]
  return out


# Tensors a checkpoint may hold that no parameter reads.
IGNORED_SUFFIXES = ('rotary_emb.inv_freq',)


def to_flax(kind, array, shape):
  """The flax parameter of `shape` from a tensor laid out as `kind`."""
  if kind == 'same':
    out = array
  elif kind == 'dense':
    out = array.T
  elif kind == 'heads':
    out = array.T.reshape(shape)
  elif kind == 'out':
    out = array.T.reshape(shape)
  elif kind == 'bias':
    out = array.reshape(shape)
  else:
    raise ValueError(kind)
  if out.shape != tuple(shape):
    raise ConfigError(f'tensor of shape {array.shape} does not fit the '
                      f'parameter of shape {tuple(shape)}')
  return out


def to_hf(kind, array):
  """The tensor laid out as `kind` of a flax parameter (`to_flax`'s
  inverse)."""
  array = np.asarray(array)
  if kind == 'same':
    return array
  if kind == 'dense':
    return array.T
  if kind == 'heads':
    return array.reshape(array.shape[0], -1).T
  if kind == 'out':
    return array.reshape(-1, array.shape[-1]).T
  if kind == 'bias':
    return array.reshape(-1)
  raise ValueError(kind)
