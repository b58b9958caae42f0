"""Model inputs on the device: uint8 images to normalised float32, with the
training augmentation, inside the jitted step.

    x = augment.model_inputs(spec, 'crop_flip')(batch['inputs'], key)

Images cross from the host as uint8 (a quarter of float32's bytes) and are
augmented here, on the accelerator, seeded by a key derived from
(seed, step): `crop_flip` pads 4 zero pixels and crops back at a random
offset, then flips half the images left-right; `flip` only flips. Language
model tokens and float signals pass through. (The ImageNet-style inception
crop of variable-size images is made on the host, in the input workers,
where the decoded sizes are known.)
"""
import jax
import jax.numpy as jnp
import numpy as np

PAD = 4


def crop_flip(images, key, pad=PAD):
  """Random crop of the zero-padded images (NHWC) and random h-flip."""
  n, h, w, _ = images.shape
  k_y, k_x, k_f = jax.random.split(key, 3)
  dy = jax.random.randint(k_y, (n,), 0, 2 * pad + 1)
  dx = jax.random.randint(k_x, (n,), 0, 2 * pad + 1)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crop = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(
      im, (y, x, 0), (h, w, im.shape[-1])))(padded, dy, dx)
  return flip(crop, k_f)


def flip(images, key):
  """Flips a random half of the images (NHWC) left-right."""
  f = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(f[:, None, None, None], images[:, :, ::-1], images)


AUGMENTATIONS = {'crop_flip': crop_flip, 'flip': flip,
                 'inception_crop': None}   # on the host, with data.image_size


def model_inputs(spec, augment=''):
  """`fn(x, key=None)`: what the model reads from a host batch's `inputs`;
  with a `key` (training) the augmentation `augment` is applied first."""
  mean = None if spec.mean is None else np.asarray(spec.mean, np.float32)
  std = None if spec.std is None else np.asarray(spec.std, np.float32)
  fn = AUGMENTATIONS.get(augment) if augment else None

  def inputs(x, key=None):
    if spec.task == 'lm' or mean is None:
      return x
    x = x.astype(jnp.float32)
    if key is not None and fn is not None:
      x = fn(x, key)
    return (x - mean) / std

  return inputs
