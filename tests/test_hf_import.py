"""Hugging Face checkpoints (distill/hf_checkpoint.py): a tiny random model
of each family made with `transformers`, saved with save_pretrained and
imported here, gives transformers' logits (f32, 1e-4) on the unpadded
positions of a right-padded batch; bf16 and many-file checkpoints; one-line
refusals; the writer round-trips through transformers.

    python -m pytest -q tests/test_hf_import.py
"""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from conftest import REPO, normal
from core.errors import ConfigError
from distill import hf_checkpoint
import models

VOCAB = 97
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
              max_position_embeddings=64)


@pytest.fixture(autouse=True, scope='module')
def _torch_caches_in_tmp_path(tmp_path_factory):
  """torch makes its compile cache folder in $TMPDIR (the session's, which
  must end empty) unless told where."""
  old = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
  os.environ['TORCHINDUCTOR_CACHE_DIR'] = str(
      tmp_path_factory.mktemp('torchinductor'))
  yield
  if old is None:
    os.environ.pop('TORCHINDUCTOR_CACHE_DIR', None)
  else:
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = old


def hf_model(family, **kw):
  """A tiny transformers model of `family` with random (not init-scale)
  weights, in eval mode with eager attention."""
  transformers = pytest.importorskip('transformers')
  torch = pytest.importorskip('torch')
  torch.manual_seed(0)
  if family == 'llama':      # Llama 3's rope scaling, at a short context
    cfg = transformers.LlamaConfig(**COMMON, rope_theta=500000.0, rope_scaling=dict(
        rope_type='llama3', factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=16))
  elif family == 'qwen2':
    cfg = transformers.Qwen2Config(**COMMON, tie_word_embeddings=True)
  elif family == 'qwen3':    # head_dim independent of width
    cfg = transformers.Qwen3Config(**COMMON, head_dim=32)
  else:                      # every Gemma 2 convention, the window short
    cfg = transformers.Gemma2Config(
        **COMMON, head_dim=16, query_pre_attn_scalar=24, sliding_window=5,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0)
  for k, v in kw.items():
    setattr(cfg, k, v)
  model = transformers.AutoModelForCausalLM.from_config(
      cfg, attn_implementation='eager').eval()
  with torch.no_grad():       # norm gains and biases away from 1 and 0 too
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  return model


def hf_logits(model, tokens, mask):
  torch = pytest.importorskip('torch')
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens),
                 attention_mask=torch.tensor(mask)).logits.float().numpy()


def batch(seed=0, shape=(3, 12)):
  """Random tokens and a right-padding mask (rows of 12, 8 and 3 tokens)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, VOCAB, shape)
  lengths = np.array([shape[1], 8, 3])[:shape[0]]
  mask = (np.arange(shape[1])[None] < lengths[:, None]).astype(np.int64)
  return tokens, mask


def logits(model, params, tokens):
  return np.asarray(model.apply({'params': params}, jnp.asarray(tokens)))


@pytest.mark.slow
@pytest.mark.parametrize('family,scan', [
    ('llama', False), ('qwen2', False), ('qwen3', False), ('gemma2', False),
    ('gemma2', True)])
def test_imported_logits_equal_transformers(tmp_path, family, scan):
  ref_model = hf_model(family)
  ref_model.save_pretrained(tmp_path, safe_serialization=True)
  tokens, mask = batch()
  want = hf_logits(ref_model, tokens, mask)
  model, params = hf_checkpoint.load_hf_lm(str(tmp_path), scan_layers=scan)
  got = logits(model, params, tokens)
  valid = mask.astype(bool)
  np.testing.assert_allclose(got[valid], want[valid], atol=1e-4, rtol=0)


def test_bf16_checkpoint_in_many_files(tmp_path):
  torch = pytest.importorskip('torch')
  ref_model = hf_model('llama').to(torch.bfloat16)
  ref_model.save_pretrained(tmp_path, safe_serialization=True,
                            max_shard_size='40KB')
  assert os.path.isfile(tmp_path / hf_checkpoint.INDEX)
  assert len(list(tmp_path.glob('*.safetensors'))) > 1
  model, params = hf_checkpoint.load_hf_lm(str(tmp_path))
  assert params['embed']['embedding'].dtype == jnp.float32
  np.testing.assert_array_equal(
      params['embed']['embedding'],
      ref_model.model.embed_tokens.weight.detach().float().numpy())
  bf16 = hf_checkpoint.load_hf_lm(str(tmp_path), param_dtype='bfloat16')[1]
  assert bf16['block0']['attn']['query']['kernel'].dtype == jnp.bfloat16
  transformers = pytest.importorskip('transformers')
  ref_f32 = transformers.AutoModelForCausalLM.from_pretrained(  # its weights
      tmp_path, attn_implementation='eager', dtype=torch.float32).eval()
  tokens, mask = batch()
  want = hf_logits(ref_f32, tokens, mask)
  valid = mask.astype(bool)
  np.testing.assert_allclose(logits(model, params, tokens)[valid],
                             want[valid], atol=1e-4, rtol=0)


def _edit_config(path, **fields):
  cfg = json.loads((path / 'config.json').read_text())
  cfg.update(fields)
  (path / 'config.json').write_text(json.dumps(cfg))


@pytest.mark.parametrize('fields,message', [
    (dict(model_type='mistral'), "unknown Hugging Face model_type 'mistral'; "
     'valid choices: gemma2, llama, qwen2, qwen3'),
    (dict(num_local_experts=8), 'num_local_experts=8 is not supported'),
    (dict(rope_parameters=dict(rope_type='yarn', factor=4.0)),
     "rope_parameters.rope_type='yarn' is not supported"),
    (dict(hidden_act='relu'), "hidden_act='relu' is not supported"),
    (dict(attention_bias=True), 'attention_bias=True is not supported'),
])
def test_unsupported_config_fields_are_one_line(tmp_path, fields, message):
  hf_model('llama').save_pretrained(tmp_path, safe_serialization=True)
  _edit_config(tmp_path, **fields)
  with pytest.raises(ConfigError, match=message.replace('(', r'\(')) as e:
    hf_checkpoint.load_hf_lm(str(tmp_path))
  assert '\n' not in str(e.value)


def test_missing_folder_and_unread_tensors_are_one_line(tmp_path):
  with pytest.raises(ConfigError, match='config.json is missing'):
    hf_checkpoint.load_hf_lm(str(tmp_path / 'nothing'))
  hf_model('qwen2').save_pretrained(tmp_path, safe_serialization=True)
  _edit_config(tmp_path, model_type='llama')       # its q/k/v biases unread
  with pytest.raises(ConfigError, match='tensor model.layers.0.self_attn.'
                     r'\w_proj.bias of .* is not read by the llama model'):
    hf_checkpoint.load_hf_lm(str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize('family_kw', [
    dict(mlp='swiglu', num_kv_heads=1, rope_theta=500000.0),   # llama, MQA
    dict(mlp='swiglu', qkv_bias=True, tie_embeddings=True),     # qwen2
    dict(mlp='geglu', norm_plus_one=True, post_norms=True, embed_scale=True,
         head_dim=8, query_pre_attn_scalar=12.0, attn_softcap=20.0,
         logit_softcap=10.0, sliding_window=3, tie_embeddings=True),
])
def test_written_model_loads_in_transformers_and_back(tmp_path, family_kw):
  """save_hf_lm of a model initialised here: transformers' logits equal
  ours, and load_hf_lm gives the same parameters back."""
  transformers = pytest.importorskip('transformers')
  torch = pytest.importorskip('torch')
  for scan in (False, True):
    model = models.build('transformer_lm', VOCAB, num_layers=2, width=32,
                         num_heads=4, mlp_dim=64, max_len=16,
                         positions='rope', scan_layers=scan, **family_kw)
    tokens, mask = batch(1)
    params = nn.unbox(model.init(jax.random.PRNGKey(0),
                                 jnp.asarray(tokens))['params'])
    params = jax.tree.map(   # gains and biases away from their init
        lambda p: p + normal(p.size, p.shape, scale=0.1), params)
    folder = str(tmp_path / f'scan{scan}')
    hf_checkpoint.save_hf_lm(model, params, folder)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation='eager', dtype=torch.float32).eval()
    valid = mask.astype(bool)
    np.testing.assert_allclose(logits(model, params, tokens)[valid],
                               hf_logits(ref, tokens, mask)[valid],
                               atol=1e-4, rtol=0)
    again, back = hf_checkpoint.load_hf_lm(folder, scan_layers=scan)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    np.testing.assert_allclose(logits(again, back, tokens),
                               logits(model, params, tokens), atol=1e-6)


@pytest.mark.slow
def test_the_default_lm_is_not_written_as_a_family(tmp_path):
  model = models.build('transformer_lm', VOCAB, num_layers=1, width=16,
                       num_heads=2, mlp_dim=32, max_len=8)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
  with pytest.raises(ConfigError, match="not a Hugging Face family .*"
                     "model.positions must be 'rope'; model.mlp must be"):
    hf_checkpoint.save_hf_lm(model, params['params'], str(tmp_path))


_ON_A_MESH = '''
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh
from distill import hf_checkpoint
path, scan = sys.argv[1], sys.argv[2] == '1'
mesh = Mesh(np.array(jax.devices()).reshape(1, 2, 2), ('data', 'fsdp', 'model'))
model, params = hf_checkpoint.load_hf_lm(path, mesh, scan_layers=scan)
plain = hf_checkpoint.load_hf_lm(path, scan_layers=scan)[1]
spread = 0
for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(plain)):
  assert got.sharding.mesh.shape == mesh.shape, got.sharding
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  shard = got.addressable_shards[0].data.shape
  spread += shard != got.shape
print('spread', spread, 'of', len(jax.tree.leaves(params)))
'''


@pytest.mark.slow
@pytest.mark.parametrize('scan', [False, True])
def test_import_places_each_tensor_on_its_sharding(tmp_path, scan):
  """On 4 CPU devices (fsdp 2 x model 2) the parameters land sharded by the
  logical-axis rules, equal to a one-device import."""
  hf_model('gemma2').save_pretrained(tmp_path, safe_serialization=True)
  env = dict(os.environ, PYTHONPATH=REPO,
             XLA_FLAGS=conftest.xla_flags(4))
  proc = subprocess.run([sys.executable, '-c', _ON_A_MESH, str(tmp_path),
                         '1' if scan else '0'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  spread = int(proc.stdout.split()[1])
  assert spread >= 10, proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize('family', ['llama', 'gemma2'])
def test_left_padded_logits_equal_transformers(tmp_path, family):
  """A left-padded batch with its positions and padding mask (the model's
  `positions`, `valid`; distill/generate.py) gives transformers' logits
  with the same attention mask and position ids."""
  torch = pytest.importorskip('torch')
  ref_model = hf_model(family)
  ref_model.save_pretrained(tmp_path, safe_serialization=True)
  tokens, right = batch()
  mask = right[:, ::-1].copy()                      # the padding on the left
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  with torch.no_grad():
    want = ref_model(input_ids=torch.tensor(tokens),
                     attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.numpy()
  model, params = hf_checkpoint.load_hf_lm(str(tmp_path))
  got = np.asarray(model.apply({'params': params}, jnp.asarray(tokens),
                               positions=jnp.asarray(positions),
                               valid=jnp.asarray(mask.astype(bool))))
  valid = mask.astype(bool)
  np.testing.assert_allclose(got[valid], want[valid], atol=1e-4, rtol=0)
