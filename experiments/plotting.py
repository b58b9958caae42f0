"""matplotlib for the experiment scripts, or None when it is not installed
(the tables are still written)."""


def pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('matplotlib is not installed: no plot (pip install -e .[plot])')
    return None
  return plt
