"""launch.generate as a user runs it (subprocesses, tiny scale): a small LM
trained here on a text the test writes, sampled from its workdir and from
its export, with and without the KV cache, and a text scored."""
import json
import os

import numpy as np
import pytest

from test_export import _ok, _one_line, _run, _tree

TEXT = ('the quick brown fox jumps over the lazy dog. ' * 40 +
        'pack my box with five dozen liquor jugs. ' * 40)


@pytest.fixture(scope='module')
def lm(tmp_path_factory):
  root = tmp_path_factory.mktemp('generate')
  text = root / 'corpus.txt'
  text.write_text(TEXT)
  workdir = str(root / 'lm')
  _ok(_run('launch.main', f'--config=configs/shakespeare_lm.py:runlocal,'
           f'text={text},seq_len=32,steps=20', f'--workdir={workdir}',
           '--config.tensorboard=False', '--config.data.validation=20'))
  return root, workdir


def _rows(proc):
  return [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]


@pytest.mark.slow
def test_generate_from_a_workdir_and_its_export_cached_or_not(lm, tmp_path):
  root, workdir = lm
  prompts = tmp_path / 'prompts.txt'
  prompts.write_text('the quick\npack my box with\nt\n')
  args = [f'--prompts={prompts}', '--max_new_tokens=12']
  cached = _rows(_ok(_run('launch.generate', f'--model={workdir}', *args)))
  plain = _rows(_ok(_run('launch.generate', f'--model={workdir}', *args,
                         '--nocache')))
  assert cached == plain
  assert [r['prompt'] for r in cached] == ['the quick', 'pack my box with',
                                           't']
  assert all(len(r['completion']) == 12 for r in cached)   # char tokenizer
  export = str(tmp_path / 'export')
  _ok(_run('launch.export', f'--workdir={workdir}', f'--out={export}'))
  assert os.path.isfile(os.path.join(export, 'tokenizer.json'))
  exported = _rows(_ok(_run('launch.generate', f'--model={export}', *args)))
  assert exported == cached
  sampled = _ok(_run('launch.generate', f'--model={export}', *args,
                     '--temperature=1.0', '--top_k=5', '--seed=3'))
  assert _rows(sampled)[0]['prompt'] == 'the quick'
  assert 'tokens_per_s' in sampled.stderr


@pytest.mark.slow
def test_score_prints_loss_and_perplexity(lm, tmp_path):
  _, workdir = lm
  text = tmp_path / 'text.txt'
  text.write_text('the lazy dog jumps over the quick brown fox. ' * 3)
  out = tmp_path / 'losses.jsonl'
  proc = _ok(_run('launch.generate', f'--model={workdir}', f'--score={text}',
                  f'--output={out}', '--window=16'))
  summary = json.loads(proc.stdout.strip().splitlines()[-1][len('scored: '):])
  assert summary['tokens'] == len(text.read_text()) - 1
  assert summary['perplexity'] > 1
  rows = [json.loads(l) for l in out.read_text().splitlines()]
  assert len(rows) == summary['tokens']


@pytest.mark.slow
def test_bad_inputs_are_one_line_and_overwrite_nothing(lm, tmp_path):
  _, workdir = lm
  taken = tmp_path / 'taken.jsonl'
  taken.write_text('keep\n')
  before = _tree(str(tmp_path))
  for args, message in [
      ([f'--model={workdir}'], 'give one of --prompt'),
      ([f'--model={workdir}', '--prompt=a', f'--output={taken}'],
       'exists; give a new path'),
      ([f'--model={tmp_path}/none', '--prompt=a'], 'no such folder'),
      ([f'--model={workdir}', '--prompt=a', '--temperature=-1'],
       'must be >= 0'),
      ([f'--model={workdir}', '--prompt=a', '--max_new_tokens=0'],
       'max_new_tokens=0 must be >= 1'),
      ([f'--model={workdir}', '--prompt=a', '--which=nobody'], 'which'),
  ]:
    assert message in _one_line(_run('launch.generate', *args))
  assert _tree(str(tmp_path)) == before


@pytest.mark.slow
def test_export_hf_loads_in_transformers_with_equal_logits(lm, tmp_path):
  """--format=hf of a llama-family LM trained here: transformers'
  AutoModelForCausalLM gives its logits, and launch.generate samples from
  the folder; the project's own LM (GELU MLP) is refused in one line."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  text = tmp_path / 'corpus.txt'
  text.write_text(TEXT)
  workdir = str(tmp_path / 'llama')
  _ok(_run('launch.main', f'--config=configs/shakespeare_lm.py:runlocal,'
           f'text={text},seq_len=32,steps=3,family=llama',
           f'--workdir={workdir}', '--config.tensorboard=False',
           '--config.data.validation=20'))
  out = str(tmp_path / 'hf')
  proc = _ok(_run('launch.export', f'--workdir={workdir}', f'--out={out}',
                  '--format=hf'))
  assert "'char' tokenizer has no Hugging Face form" in proc.stdout
  assert os.path.isfile(os.path.join(out, 'config.json'))
  from distill import export  # pylint: disable=g-import-not-at-top
  model, variables, _ = export.load_model(workdir)
  tokens = np.random.default_rng(0).integers(0, model.num_classes, (2, 16))
  ours = np.asarray(model.apply(variables, tokens))
  ref = transformers.AutoModelForCausalLM.from_pretrained(
      out, torch_dtype=torch.float32, attn_implementation='eager')
  with torch.no_grad():
    theirs = ref(torch.as_tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
  again = _ok(_run('launch.export', f'--workdir={workdir}', f'--out={out}',
                   '--format=hf'))
  assert 'already holds this export' in again.stdout
  _, plain = lm                # the project's own LM (GELU MLP)
  message = _one_line(_run('launch.export', f'--workdir={plain}',
                           f'--out={tmp_path}/plain_hf', '--format=hf'))
  assert 'not a Hugging Face family' in message and 'model.mlp' in message
