# %% [markdown]
# # neuroalign from a notebook: `Aligner`
#
# Fit, score, encode, save and load on a small simulated subject (200 images, 48 model V1
# neurons, two repeats per image). Runs on a laptop CPU in well under a minute.
# `examples/aligner_demo.ipynb` is this file as a notebook (a test keeps the two equal and runs it).

# %%
import numpy as np

from neuroalign import Aligner
from neuroalign.data.simulate import PATCHES, simulate_responses
from neuroalign.data.stimuli import make_stimuli

images, _ = make_stimuli(200, seed=0)                            # (200, 68, 270) float32 in [0, 1]
sim = simulate_responses(images, 48, PATCHES["sim-M1"], seed=0)
repeats = sim["repeats"]                                         # (2, 200, 48) single trials
responses = repeats.mean(axis=0)                                 # (200, 48) one row per image

# the first 160 images are the recording we fit; the last 40 play "new data" below
fit_images, fit_responses, fit_repeats = images[:160], responses[:160], repeats[:, :160]
new_images, new_responses = images[160:], responses[160:]

# %% [markdown]
# ## Fit
# `Aligner(preset, **overrides)` holds settings only (scikit-learn style: `get_params`, `set_params`,
# `sklearn.base.clone`). Overrides are `TrainConfig` fields: `epochs=15`, or `section__field` such as
# `image__backbone="v1_gabor"`, `neural__kind="latent"`. `fit` splits the images into
# train/val/test by image, fits the normaliser on the training rows, trains with the same engine
# as the CLI and the dashboard, restores the best epoch and scores it on the untouched test images.

# %%
# image model "auto" (the preset's) first compares six image models on the validation images; one fixed
# model (the V1 Gabor bank, a layer it has is taken) keeps this demo quick
aligner = Aligner("recommended", epochs=15, image__backbone="v1_gabor")
aligner.fit(fit_images, fit_responses, repeats=fit_repeats, name="sim-demo")
print(aligner.config_.preset, aligner.config_.image.backbone, "split sizes:",
      {k: len(v) for k, v in aligner.split_.items()})

# %% [markdown]
# ## Score
# `score()` is the retrieval on the held-out test images (`score(baselines=True)` adds the ridge,
# repeat and oracle baselines; it takes longer). `score(images, responses)` ranks new pairs.

# %%
test = aligner.score()
print(f"test: top-1 image->neural {test['image_to_neural']['top1']:.2f}, "
      f"neural->image {test['neural_to_image']['top1']:.2f} (chance {test['chance_top1']:.2f}, n = {test['n']})")
new = aligner.score(new_images, new_responses)
print(f"40 new pairs: top-1 image->neural {new['image_to_neural']['top1']:.2f} (chance {new['chance_top1']:.3f})")

# %% [markdown]
# ## Encode new data
# Shared-space embeddings `(n, q)` and 16x64 maps of new images and of new responses (same neurons,
# raw values: the fitted normaliser is applied).

# %%
img = aligner.encode_images(new_images)
neu = aligner.encode_responses(new_responses)
print("embeddings", img.embeddings.shape, neu.embeddings.shape, "maps", img.maps.shape)


def unit(x):
    x = x - x.mean(axis=1, keepdims=True)  # the recommended preset scores centred cosines
    return x / np.linalg.norm(x, axis=1, keepdims=True)


similarity = unit(img.embeddings) @ unit(neu.embeddings).T     # (40 images, 40 responses)
print("images whose own response ranks first:", int((similarity.argmax(axis=1) == np.arange(40)).sum()), "of 40")

# %% [markdown]
# ## Save and load
# `save()` writes a run folder under `./runs` (or `$NEUROALIGN_RUNS_DIR`): the dashboard's Runs,
# Retrieval and Neurons pages list it. `Aligner.load` brings it back (CLI and dashboard runs too).

# %%
run_dir = aligner.save()
same = Aligner.load(run_dir)
assert np.allclose(same.encode_images(new_images).embeddings, img.embeddings, atol=1e-5)
print("saved to", run_dir.name, "and loaded:", same)
