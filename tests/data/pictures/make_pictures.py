"""Rebuild this folder of ordinary pictures (run once, in a separate environment with scikit-image and opencv;
neither is a kmodelpy dependency). Sources and licences: LICENSES.md."""
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage

HERE = Path(__file__).resolve().parent
SKIMAGE = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
           "hubble_deep_field.jpg", "grass.png", "brick.png", "coins.png", "page.png", "moon.png", "color.png"]
MAX_SIDE = 320
COCO = ["436511", "436520", "436551", "436559", "436617", "436691"]  # 320x240 RGB planes in the reference data


def main(reference: Path) -> None:
    data = Path(os.path.dirname(skimage.__file__)) / "data"
    for name in SKIMAGE:
        img = cv2.imread(str(data / name), cv2.IMREAD_COLOR)  # grey pictures become three equal planes
        f = MAX_SIDE / max(img.shape[:2])
        if f < 1:  # keep the folder small: no model here takes more than 256 pixels a side
            img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(HERE / f"skimage_{Path(name).stem}.png"), img)
    for k in COCO:
        hits = sorted(reference.glob(f"**/COCO_val2014_000000{k}.bin"))
        raw = next(np.fromfile(p, np.uint8) for p in hits if p.stat().st_size == 3 * 240 * 320)
        rgb = raw.reshape(3, 240, 320).transpose(1, 2, 0)
        cv2.imwrite(str(HERE / f"coco_{k}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "reference" / "ncc_outputs")
