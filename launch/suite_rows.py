"""The compile check suite table's rows, by config and device count (no
flags here: tests import it beside the launchers)."""


def row_key(spec, stage, devices):
  """How a suite table's row starts (suite_table)."""
  return f'| `{spec}` ({stage}) | {devices} |'


def merge_rows(old_table, new_table, suite, devices_list):
  """The suite's table from `new_table`'s rows where it has them, else
  `old_table`'s, in suite order (rows neither has are left out)."""
  def rows(table):
    return {line.split(' | ', 2)[0] + ' | ' + line.split(' | ', 2)[1] + ' |':
            line for line in table.splitlines()[2:] if line.startswith('| `')}
  old, new = rows(old_table), rows(new_table)
  out = new_table.splitlines()[:2]
  for spec, stage in suite:
    for devices in devices_list:
      key = row_key(spec, stage, devices)
      if key in new or key in old:
        out.append(new.get(key, old.get(key)))
  return '\n'.join(out)
