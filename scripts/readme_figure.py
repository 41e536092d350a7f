"""Write docs/waves.png: a sample and snapshots of an NWM's hidden state (the README's picture)."""
import numpy as np
from PIL import Image

from waveviz.app.landing import demo_waves

image, snaps, caption = demo_waves(frames=5)
scale = 3
tiles = [image] + list(snaps)
gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
row = np.concatenate([t for pair in zip(tiles, [gap] * len(tiles)) for t in pair][:-1], axis=1)
Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST).save("docs/waves.png")
print("wrote docs/waves.png:", caption)
