"""Training past the window: m64 with and without the state carried across steps.

    python sweep.py --sweep=configs/sweeps/carry.py --workdir=runs/carry
    python benchmarks/context_use.py --workdir=runs/carry --lengths 4096 16384 65536 \
        --restart_every 4096 --out docs/results/carry

As configs/sweeps/long_context.py (configs/base.py: D=128, 4 layers, 4 heads; stdlib_long,
windows of 4,096 bytes, 2 per step, 150 steps), for causal_latent M=64 trained with each
window starting blank (carry_state=False: shuffled windows of the joined split) and with
each batch row reading its documents' windows in turn and carrying the latent state from
step to step (carry_state=True). The evaluation reads each validation document from its
first byte, streamed, against the same model restarted every 4,096 bytes.
"""

BASE = 'configs/base.py'
COMMON = {'data.name': 'stdlib_long', 'data.seq_len': 4096, 'per_device_batch_size': 2,
          'num_train_steps': 150, 'warmup_steps': 15, 'eval_every_steps': 75,
          'checkpoint_every_steps': 75, 'num_eval_steps': 5,
          'model.attention': 'causal_latent', 'model.num_latents': 64}


def get_sweep():
  return [{'carry_state': False}, {'carry_state': True}]
