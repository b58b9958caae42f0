"""Samples text from a language model, or scores a text with it
(distill/generate.py: a KV cache, prompts of different lengths padded on
the left).

    python -m launch.generate --model=/tmp/distill/guide_lm \
        --prompt='ROMEO:' --max_new_tokens=200 --temperature=0.8 --top_k=40
    python -m launch.generate --model=EXPORT_DIR --prompts=prompts.txt \
        --output=samples.jsonl                      # one prompt per line
    python -m launch.generate --model=HF_DIR --score=text.txt

--model: a workdir (its student, or --which=teacher), an export folder
(launch/export.py) or a local Hugging Face model folder. Sampling is greedy
at --temperature=0 (the default); draws are a function of --seed. --score
prints the text's per-token loss and perplexity (with --output, the loss
of each token as JSON lines). --no_cache recomputes the whole window for
every new token (the reference; slower).
"""
import json
import os
import sys
import time

from absl import app
from absl import flags

from launch import cli

_MODEL = flags.DEFINE_string('model', None, 'A workdir, an export folder or '
                             'a Hugging Face model folder.')
_PROMPT = flags.DEFINE_string('prompt', None, 'One prompt.')
_PROMPTS = flags.DEFINE_string('prompts', None,
                               'A file of prompts, one per line.')
_SCORE = flags.DEFINE_string('score', None, 'A text file to score.')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON lines out (else stdout).')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 100, 'Tokens per prompt.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.0, '0: greedy.')
_TOP_K = flags.DEFINE_integer('top_k', 0, 'Sample among the k likeliest '
                              '(0: all).')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Nucleus mass (1.0: all).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the draws.')
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Prompts per batch.')
_CACHE = flags.DEFINE_bool('cache', True, 'Decode with the KV cache.')
_WINDOW = flags.DEFINE_integer('window', 0, '--score: tokens per window '
                               '(0: the model\'s max_len, or 1024).')
_WHICH = flags.DEFINE_string(
    'which', 'student', 'student | teacher, for a distillation workdir.')
_DEBUG = flags.DEFINE_bool('debug', False,
                           'Show the traceback of a reported error.')


def _prompts():
  from core.errors import ConfigError  # pylint: disable=g-import-not-at-top
  given = [f for f in (_PROMPT.value, _PROMPTS.value, _SCORE.value)
           if f is not None]
  if len(given) != 1:
    raise ConfigError('give one of --prompt, --prompts=FILE or --score=FILE')
  if _PROMPT.value is not None:
    return [_PROMPT.value]
  path = _PROMPTS.value
  try:
    with open(path, encoding='utf-8') as f:
      lines = [l.rstrip('\n') for l in f]
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f'--prompts={path} cannot be read: {e}') from None
  prompts = [l for l in lines if l]
  if not prompts:
    raise ConfigError(f'--prompts={path} holds no prompt')
  return prompts


def _write(rows):
  text = ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
  if _OUTPUT.value:
    from distill import files  # pylint: disable=g-import-not-at-top
    files.write_text(_OUTPUT.value, text)     # checked new in main
  else:
    sys.stdout.write(text)


def _score(model, params, tokenizer):
  from core.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from distill import generate  # pylint: disable=g-import-not-at-top
  try:
    with open(_SCORE.value, encoding='utf-8') as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f'--score={_SCORE.value} cannot be read: {e}') from None
  tokens = tokenizer.encode(text)
  nll = generate.score(model, params, tokens, _WINDOW.value)
  if _OUTPUT.value:
    _write([{'token': int(t), 'loss': float(l)}
            for t, l in zip(tokens[1:], nll)])
  print('scored: ' + json.dumps({
      'tokens': int(len(nll)), 'loss': round(float(nll.mean()), 4),
      'perplexity': round(generate.perplexity(nll), 3)}), flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _DEBUG.value:
    cli.quiet_library_reports()
  try:
    from core.errors import ConfigError  # pylint: disable=g-import-not-at-top
    from distill import generate  # pylint: disable=g-import-not-at-top
    from distill import lm_source  # pylint: disable=g-import-not-at-top
    prompts = None if _SCORE.value is not None else _prompts()
    if _OUTPUT.value and os.path.exists(_OUTPUT.value):
      raise ConfigError(f'--output={_OUTPUT.value} exists; give a new path '
                        '(nothing was written)')
    if _SCORE.value is not None and (_PROMPT.value or _PROMPTS.value):
      _prompts()                                # the one-line refusal
    generate.check_options(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value,
                           _MAX_NEW.value)
    model, params, tokenizer = lm_source.load(_MODEL.value, _WHICH.value)
    if prompts is None:
      _score(model, params, tokenizer)
      return
    rows, start, new = [], time.time(), 0
    for i in range(0, len(prompts), _BATCH.value):
      batch = prompts[i:i + _BATCH.value]
      ids = [list(tokenizer.encode(p)) for p in batch]
      out = generate.generate(
          model, params, ids, _MAX_NEW.value, _TEMPERATURE.value,
          _TOP_K.value, _TOP_P.value, _SEED.value + i, _CACHE.value)
      new += out.size
      rows += [{'prompt': p, 'completion': tokenizer.decode(o)}
               for p, o in zip(batch, out)]
    _write(rows)
    print('generated: ' + json.dumps({
        'prompts': len(prompts), 'new_tokens': int(new),
        'tokens_per_s': round(new / (time.time() - start), 1)}),
          file=sys.stderr, flush=True)
  except BaseException as e:  # pylint: disable=broad-except
    cli.fail(e, _DEBUG.value)


def run():
  cli.run_main(main, ['model'])


if __name__ == '__main__':
  run()
