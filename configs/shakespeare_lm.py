"""A decoder-only Transformer LM on Tiny Shakespeare's characters, or on any
text file or folder.

    python -m launch.main --config=configs/shakespeare_lm.py \
        --workdir=/tmp/distill/shakespeare_lm
    python -m launch.main --config=configs/shakespeare_lm.py:text=my_corpus.txt,tokenizer=spm,vocab=2000 \
        --workdir=/tmp/distill/my_lm

Arguments: text (a UTF-8 file or folder; default Tiny Shakespeare from
manual_dir), tokenizer (char | spm: SentencePiece trained on the text's
training part when it is prepared), vocab (spm pieces), layers, width,
heads, mlp (hidden size), positions (learned | rope), seq_len (window),
steps, residual (standard or a LAuReL variant, e.g. laurel_rw_lr), rank
(LAuReL's r), scan (layers under nn.scan), family ('' | plain | llama |
qwen3 | gemma2: the model's family fields present and set,
docs/pretrained-lm.md), runlocal (2 steps), manual_dir
(folder or path of tiny_shakespeare.txt, default ../shared/datasets).
Accuracy is next-token accuracy; loss is nats per token.
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, layers=4, width=128, heads=4, mlp=512,
                         positions='rope', seq_len=128, steps=2000,
                         residual='standard', rank=16, scan=False,
                         text='', tokenizer='char', vocab=0, family='',
                         runlocal=False, manual_dir='../shared/datasets')
  c = common.base_config()
  c.data.name = 'text' if arg.text else 'tiny_shakespeare'
  c.data.manual_dir = arg.text or arg.manual_dir
  c.data.seq_len = arg.seq_len
  c.data.tokenizer = arg.tokenizer
  c.data.vocab_size = arg.vocab
  c.data.validation = 200
  c.data.labeled = -1
  c.model_name = 'transformer_lm'
  c.model.num_layers = arg.layers
  c.model.width = arg.width
  c.model.num_heads = arg.heads
  c.model.mlp_dim = arg.mlp
  c.model.max_len = arg.seq_len
  c.model.positions = arg.positions
  c.model.scan_layers = arg.scan
  common.set_memory(c.model, attention='xla')
  common.set_residual(c.model, arg.residual, arg.rank, a_init='colorth')
  c.batch_size = 64
  c.eval_batch_size = 100
  c.total_steps = arg.steps
  c.optimizer.name = 'adamw'
  c.optimizer.lr = 3e-3
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip = 1.0
  c.schedule.name = 'cosine'
  c.schedule.warmup_steps = 100
  c.eval_every_steps = 500
  c.log_every_steps = 100
  if arg.runlocal:
    c.model.num_layers = 1
    c.model.width = 32
    c.model.num_heads = 2
    c.model.mlp_dim = 64
    c.total_steps = 2
    c.schedule.warmup_steps = 1
    c.log_every_steps = 1
    c.batch_size = 8
    c.eval_batch_size = 100
  common.set_family(c.model, arg.family)
  return c
