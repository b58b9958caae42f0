"""The README and docs/: every relative link points to an existing file (and
anchor), the README stays short, its two commands stay as `.ci/run` runs
them, and the pages say what holds now (no dated entries)."""
import glob
import os
import re

import pytest

from conftest import REPO

README = os.path.join(REPO, 'README.md')
PAGES = [README] + sorted(
    glob.glob(os.path.join(REPO, 'docs', '**', '*.md'), recursive=True))

# The README's two commands, verbatim: (b) is what .ci/run runs.
COMMAND_A = ('python3 -m venv .venv && . .venv/bin/activate && pip install -e'
             ' . && python -m experiments.unlabeled_distillation'
             ' --table=quickstart')
COMMAND_B = ("bash launch/install_cpu_kernels.sh && python3 -m venv .venv && ."
             " .venv/bin/activate && pip install -q -e '.[test]' && python -m"
             ' pytest -q -n auto --dist loadfile tests')

LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')


def _read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def _outside_code(text):
  """The text with fenced code blocks and inline code spans blanked out."""
  blank = lambda m: '\n' * m.group(0).count('\n')   # keep line numbers
  text = re.sub(r'^```.*?^```', blank, text, flags=re.M | re.S)
  return re.sub(r'`[^`\n]*`', '', text)


def slug(heading):
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces
  to hyphens."""
  s = heading.strip().lower()
  s = re.sub(r'[^\w\- ]', '', s)
  return s.replace(' ', '-')


def anchors(path):
  """The anchors of a markdown file's headings (duplicates get -1, -2, ...)."""
  text = re.sub(r'^```.*?^```', '', _read(path), flags=re.M | re.S)
  seen, out = {}, set()
  for m in re.finditer(r'^#{1,6}\s+(.*?)\s*#*\s*$', text, flags=re.M):
    base = slug(m.group(1))
    n = seen.get(base, 0)
    seen[base] = n + 1
    out.add(base if n == 0 else f'{base}-{n}')
  return out


def links(path):
  """(target, line) of every relative link of a markdown file."""
  text = _outside_code(_read(path))
  for m in LINK.finditer(text):
    target = m.group(1)
    if re.match(r'^[a-z][a-z0-9+.-]*:', target):    # http:, mailto:, ...
      continue
    yield target, text.count('\n', 0, m.start()) + 1


def test_there_are_docs_pages():
  names = {os.path.relpath(p, REPO) for p in PAGES}
  for page in ('docs/faults.md', 'docs/benchmarks.md', 'docs/data.md',
               'docs/scaling.md', 'docs/experiments.md', 'docs/regime.md',
               'docs/methods/weighted.md', 'docs/methods/slam.md'):
    assert page in names


@pytest.mark.parametrize('path', PAGES,
                         ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves(path):
  broken = []
  for target, line in links(path):
    file_part, _, anchor = target.partition('#')
    dest = (os.path.normpath(os.path.join(os.path.dirname(path), file_part))
            if file_part else path)
    where = f'{os.path.relpath(path, REPO)}:{line}: {target}'
    if not os.path.exists(dest):
      broken.append(f'{where} (no such file)')
    elif anchor and (not dest.endswith('.md') or anchor not in anchors(dest)):
      broken.append(f'{where} (no such anchor)')
  assert not broken, '\n'.join(broken)


def test_readme_is_at_most_300_lines():
  n = len(_read(README).splitlines())
  assert n <= 300, f'README.md has {n} lines; move detail into docs/'


def test_readme_keeps_its_two_commands_verbatim():
  lines = _read(README).splitlines()
  assert COMMAND_A in lines
  assert COMMAND_B in lines
  ci = _read(os.path.join(REPO, '.ci', 'run'))
  assert COMMAND_B in ci.splitlines(), '.ci/run no longer runs command (b)'


@pytest.mark.parametrize('path', PAGES,
                         ids=lambda p: os.path.relpath(p, REPO))
def test_pages_have_no_dated_entries(path):
  """A page says what holds now and the command that shows it; history is
  in git."""
  dated = [f'{os.path.relpath(path, REPO)}:{i}: {line.strip()}'
           for i, line in enumerate(_read(path).splitlines(), 1)
           if re.search(r'\b20\d\d-\d\d-\d\d\b', line)]
  assert not dated, '\n'.join(dated)


def test_slug_follows_github():
  assert slug('Faults and bad input') == 'faults-and-bad-input'
  assert slug("Which of the papers' preconditions our tables meet") == (
      'which-of-the-papers-preconditions-our-tables-meet')
  assert slug('CIFAR-10, 10 epochs') == 'cifar-10-10-epochs'
  assert slug('`model.conv` and XLA') == 'modelconv-and-xla'
