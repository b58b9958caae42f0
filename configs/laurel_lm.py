"""LAuReL on a decoder-only LM: the residual of every block is a LAuReL
variant (models/laurel.py), or the standard one for the baseline row.

    python -m launch.main --config=configs/laurel_lm.py:residual=laurel_rw_lr \
        --workdir=/tmp/distill/laurel_lm                   # cpu scale
    python -m launch.compile_check --config=configs/laurel_lm.py:scale=paper --devices=8

Arguments:
  scale     cpu (6 layers x 64 on Tiny Shakespeare's characters, the
            experiments/laurel.py table's model) | paper (the LAuReL paper's
            Table 5 ablation model as far as ../shared/docs/papers.md
            reconstructs it: 24 layers x 768, non-gated MLP 2048, 12 heads
            (the head count is not given), a 32,768-token SentencePiece
            vocabulary on C4, 157M parameters; sequence length and batch are
            not given: 1,024 tokens and a global batch of 128 here; bfloat16,
            layers scanned and rematerialised, FSDP over the slice. The paper
            trained on ~10B tokens on a TPU v6e 4x4)
  residual  standard | laurel_rw | laurel_lr | laurel_rw_lr | ... (default
            laurel_rw_lr, the paper's best trade-off)
  rank      LAuReL's r (Table 5: 32); pa_k is k for the PA variants (3)
  layers    override the depth (the paper's naive-scaling row is 28)
  text, tokenizer, vocab  the cpu-scale data: a UTF-8 file or folder
            (default Tiny Shakespeare), char | spm, spm pieces
  steps, seq_len, seed, runlocal (2 steps), manual_dir (Tiny Shakespeare).
"""
from configs import common
from configs import shakespeare_lm
from core.errors import check_choice

SCALES = {  # layers, width, heads, mlp
    'cpu': (6, 64, 4, 256),
    'paper': (24, 768, 12, 2048),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, scale='cpu', residual='laurel_rw_lr', rank=0,
                         pa_k=3, layers=0, steps=0, seq_len=0, seed=0,
                         text='', tokenizer='char', vocab=0,
                         runlocal=False, manual_dir='../shared/datasets')
  check_choice('laurel_lm scale', arg.scale, SCALES)
  layers, width, heads, mlp = SCALES[arg.scale]
  paper = arg.scale == 'paper' and not arg.runlocal
  seq_len = arg.seq_len or (1024 if paper else 64)
  c = shakespeare_lm.get_config(
      f'layers={arg.layers or layers},width={width},heads={heads},mlp={mlp},'
      f'seq_len={seq_len},steps={arg.steps or (100000 if paper else 400)},'
      f'residual={arg.residual},rank={arg.rank or (32 if paper else 8)},'
      f'text={arg.text},tokenizer={arg.tokenizer},vocab={arg.vocab},'
      f'manual_dir={arg.manual_dir}' + (',runlocal' if arg.runlocal else ''))
  c.seed = arg.seed
  c.model.residual_kw.pa_k = arg.pa_k
  if not arg.runlocal:
    c.batch_size = 32
  if paper:
    c.data.name = 'c4/en'
    c.data.manual_dir = ''
    c.data.tokenizer = 'spm'
    c.data.vocab_size = 32768
    c.data.validation = 0
    c.data.test_split = 'validation'
    c.eval_splits = 'test'
    c.batch_size = c.eval_batch_size = 128
    c.mesh.data, c.mesh.fsdp = 1, -1
    c.model_dtype = 'bfloat16'
    c.model.positions = 'rope'
    c.model.tie_embeddings = True      # 157.2M + LR's 1.2M, as Table 5 counts
    c.model.scan_layers = True
    c.model.attention = 'auto'
    c.model.remat = 'full'             # 8.3 GiB of 16 at 8 devices
    c.optimizer.lr = 1e-3
    c.schedule.warmup_steps = 2000
    c.eval_every_steps = 5000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
  return c
