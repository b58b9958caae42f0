"""GUIDE on a character LM: a teacher LM, then a smaller student initialised
from it (GUIDE) and/or distilled from its logits, on Tiny Shakespeare.

    python -m launch.main --config=configs/guide_lm.py:init=guide,method=vanilla \
        --workdir=/tmp/distill/guide_kd
    python -m experiments.guide        # the four regimes x 3 seeds, one table
    python -m launch.main --config=configs/guide_lm.py:offline_topk=8,method=forward_kl \
        --workdir=/tmp/distill/lm_offline    # the teacher's top-8 cached

Arguments:
  init     '' (random) | guide (distill/guide.py)
  method   supervised (the data alone) | vanilla (logit distillation, online)
           | forward_kl | reverse_kl | jsd ((1 - alpha) CE + alpha T^2 D;
           method_kw: alpha, temperature, beta, teacher_top_k, teacher_top_p,
           truncation; docs/distillation.md)
  scale    cpu (teacher 4 x 128, student 2 x 64 on Tiny Shakespeare's
           characters; minutes here) | paper (a 1.2B teacher, 24 layers x
           2048, and a 0.5B student, 20 x 1280, head dim 128 in both, on C4
           with a 32k SentencePiece vocabulary and 2,048-token windows;
           bfloat16, layers scanned and rematerialised, attention by the
           platform's fused kernel (`auto`), the teacher held in bfloat16,
           FSDP over the slice; global batch 32: 4 windows per chip of an
           8-chip v5e slice, raise it with the slice) | llama3b (a teacher
           of Llama 3.2 3B's shape, 28 layers x 3072, 24 query heads and 8
           K/V heads of dim 128, SwiGLU MLP 8192, rope theta 500000 with
           Llama 3's rope scaling (factor 32 from 8,192 positions), RMSNorm
           eps 1e-5, tied embeddings, a 128,256 vocabulary: 3.2B; and a
           GUIDE student half its width, 14 x 1536, 12 query heads and 4
           K/V heads of dim 128 (the teacher's 3 queries per K/V head), MLP
           4096: 0.55B; family llama, the rest as at paper scale, with a
           128,256-piece SentencePiece vocabulary)
  teacher  a trained teacher's workdir ('' trains it in <workdir>/teacher)
  teacher_hf  a Hugging Face model folder (llama, qwen2, qwen3, gemma2) as
           the teacher instead (docs/pretrained-lm.md); the student's
           family fields must be the teacher's (`family`)
  family   '' (this project's LM) | plain | llama | qwen3 | gemma2: teacher
           and student of that family's conventions (common.set_family)
  seq_len  tokens per window (default 64 at cpu scale, 2048 at paper)
  text, tokenizer, vocab  the cpu-scale data: a UTF-8 file or folder (default
           Tiny Shakespeare), char | spm, spm pieces; at paper scale `vocab`
           is the SentencePiece vocabulary (default 32768, 128256 at
           llama3b; 256000: Gemma 2's)
  loss_chunk  sequence positions per loss chunk, teacher and student (config
           loss_chunk_len: each chunk's logits computed inside the loss loop,
           distill/chunked.py; 0: off, the whole batch's logits at once)
  steps, teacher_steps, seed, trainable_projection (GUIDE's learned-M
  reading: frozen teacher table, trainable projection), runlocal (2 steps),
  manual_dir (folder of tiny_shakespeare.txt); residual, rank: the
  student's residual connection (e.g. laurel_rw_lr: a LAuReL student
  initialised by GUIDE from a standard teacher and distilled from it).
Teacher and student read the same data and vocabulary and use the same
optimizer and token budget per step.

    python -m launch.compile_check --config=configs/guide_lm.py:scale=paper,method=vanilla --devices=8
    python -m launch.compile_check --config=configs/guide_lm.py:scale=paper,method=forward_kl,vocab=256000,loss_chunk=256 --devices=8
    python -m launch.compile_check --config=configs/guide_lm.py:scale=llama3b,init=guide,method=forward_kl,loss_chunk=128 --devices=8
"""
from core import defaults
from configs import common
from configs import shakespeare_lm
from core.errors import ConfigError, check_choice

SCALES = {
    # (layers, width, heads, mlp) of teacher and student
    'cpu': ((4, 128, 4, 512), (2, 64, 2, 256)),
    'paper': ((24, 2048, 16, 8192), (20, 1280, 10, 5120)),
    'llama3b': ((28, 3072, 24, 8192), (14, 1536, 12, 4096)),
}
# Scales whose teacher has a pretrained family's shape: the family, its
# vocabulary, and the model fields beyond SCALES of (teacher, student).
_LLAMA32 = dict(head_dim=128, norm_eps=1e-5, rope_theta=500000.0,
                rope_scaling='llama3', rope_factor=32.0,
                rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                rope_original_max_len=8192, tie_embeddings=True)
PRETRAINED_SHAPES = {
    'llama3b': ('llama', 128256, (dict(_LLAMA32, num_kv_heads=8),
                                  dict(_LLAMA32, num_kv_heads=4))),
}


def _lm(arg, size, steps):
  layers, width, heads, mlp = size
  paper = arg.scale != 'cpu' and not arg.runlocal
  seq_len = arg.seq_len or (2048 if paper else 64)
  c = shakespeare_lm.get_config(
      f'layers={layers},width={width},heads={heads},mlp={mlp},'
      f'positions=learned,seq_len={seq_len},steps={steps},text={arg.text},'
      f'tokenizer={arg.tokenizer},vocab={arg.vocab},'
      f'manual_dir={arg.manual_dir}' + (',runlocal' if arg.runlocal else ''))
  c.seed = arg.seed
  c.loss_chunk_len = arg.loss_chunk
  c.batch_size = 32
  c.eval_every_steps = max(1, steps // 8) if not arg.runlocal else -1
  c.log_every_steps = min(c.log_every_steps, max(1, steps // 8))
  c.checkpoint_every_steps = max(1, steps // 2)
  c.tensorboard = False
  if paper:
    c.data.name = 'c4/en'
    c.data.manual_dir = ''
    c.data.tokenizer = 'spm'
    c.data.vocab_size = arg.vocab or (PRETRAINED_SHAPES[arg.scale][1] if
                                      arg.scale in PRETRAINED_SHAPES else
                                      32768)   # 256000: Gemma 2's
    c.data.validation = 0
    c.data.test_split = 'validation'
    c.eval_splits = 'test'
    c.eval_batch_size = c.batch_size
    c.mesh.data, c.mesh.fsdp = 1, -1
    c.model_dtype = 'bfloat16'
    c.model.scan_layers = True
    c.model.attention = 'auto'
    c.model.remat = 'dots_no_batch'   # 12.1 GiB of 16 at 8 devices
    c.optimizer.lr = 3e-4
  return c


def get_config(arg=None):
  arg = common.parse_arg(arg, init='', method='supervised', scale='cpu',
                         teacher='', steps=600, teacher_steps=1500, seed=0,
                         seq_len=0, trainable_projection=False, text='',
                         tokenizer='char', vocab=0, residual='standard',
                         rank=16, runlocal=False, teacher_hf='', family='',
                         offline_topk=0, cache_dtype='float32', alpha=-1.0,
                         beta=-1.0, temperature=-1.0, loss_chunk=0,
                         manual_dir='../shared/datasets')
  check_choice("guide_lm scale", arg.scale, SCALES)
  check_choice('guide_lm family', arg.family, common.LM_FAMILIES)
  t_size, s_size = SCALES[arg.scale]
  teacher = _lm(arg, t_size, arg.teacher_steps)
  teacher.seed = 0                     # one teacher for every student seed
  c = _lm(arg, s_size, arg.steps)
  if arg.runlocal:                     # the runlocal LM: 1 x 32; teacher 1 x 64
    teacher.model.width, teacher.model.mlp_dim = 64, 128
  family, shapes = arg.family, None
  if arg.scale in PRETRAINED_SHAPES and not arg.runlocal:
    family, _, shapes = PRETRAINED_SHAPES[arg.scale]
    if arg.family not in ('', family):
      raise ConfigError(f'guide_lm scale={arg.scale} is a {family} shape; '
                        f'family={arg.family} does not fit it (leave it '
                        f'out or give family={family})')
  common.set_family(teacher.model, family)
  common.set_family(c.model, family)
  for model, fields in zip((teacher.model, c.model), shapes or ()):
    model.update(fields)
  if arg.residual != 'standard':      # the student's (the teacher's: standard)
    common.set_residual(c.model, arg.residual, arg.rank, a_init='colorth')
  c.method = arg.method
  for key in ('alpha', 'beta', 'temperature'):   # -1: the method's default
    if getattr(arg, key) >= 0:
      c.method_kw[key] = float(getattr(arg, key))
  c.init.method = arg.init
  if arg.trainable_projection:
    c.model.embed_from = teacher.model.width
    c.optimizer.frozen = 'embed,pos_embed'
  c.teacher = dict(workdir=arg.teacher, config=teacher, hf=arg.teacher_hf)
  c.distill = defaults.distill()
  c.distill.online = not arg.offline_topk
  if arg.offline_topk:                 # distill/lm_cache.py
    if arg.offline_topk < 0:
      raise ConfigError(f'guide_lm offline_topk={arg.offline_topk} must be '
                        '>= 1 (0: online distillation)')
    c.distill.cache_topk = arg.offline_topk
    c.distill.cache_dtype = arg.cache_dtype
  if arg.scale != 'cpu' and not arg.runlocal:
    c.distill.teacher_dtype = 'bfloat16'
  return c
