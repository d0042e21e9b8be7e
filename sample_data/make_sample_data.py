"""Regenerate the bundled dltool sample data next to this script.

Makes four small, learnable data sets (about 5.5 MB in all):

* ``images/<0..9>/img_NNNN.*``: 600 synthetic digit images (60 per class) drawn
  with OpenCV Hershey fonts, with mixed sizes (28x28, 32x32, 36x28) and
  formats (PNG incl. 16-bit grey and RGBA, JPEG incl. EXIF orientation 6, BMP, WebP).
* ``audio/<tone|chirp|noise>/clip_NNNN.*``: 150 clips (50 per class), 0.5-1.5 s,
  at 8000/16000/22050 Hz, mono and a few stereo, as WAV (PCM_16), FLAC and OGG Vorbis.
* ``tabular/customers.csv``: 400-row churn-like CSV with missing values and
  RFC 4180 quoted free text.
* ``text/<positive|negative>/review_NNNN.txt``: 1000 short product reviews whose
  sentiment often hangs on a negation ("not great", "never failed"), so word order
  matters; a few have a UTF-8 BOM or CRLF line ends.

Deterministic: everything comes from seeded numpy Generators (no time, no
network), and OGG stream serial numbers (random in libsndfile) are rewritten,
so two runs give byte-identical files. Only the four folders above are
deleted and rewritten. Run: ``python sample_data/make_sample_data.py [images audio tabular text]``
(default: all four).
"""
import csv
import shutil
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from PIL import Image

ROOT = Path(__file__).resolve().parent
FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
         cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL,
         cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX]


def fresh_dir(name):
    path = ROOT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def draw_digit(rng, digit, h, w):
    """Return an (h, w, 3) uint8 BGR image of one randomly styled digit."""
    dark_bg = rng.random() < 0.5
    bg = rng.integers(0, 90, 3) if dark_bg else rng.integers(165, 256, 3)
    fg = rng.integers(170, 256, 3) if dark_bg else rng.integers(0, 85, 3)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    font = int(rng.choice(FONTS)) | (cv2.FONT_ITALIC if rng.random() < 0.2 else 0)
    thick = int(rng.integers(1, 4))
    (tw, th), _ = cv2.getTextSize(str(digit), font, 1.0, thick)
    scale = rng.uniform(0.55, 0.8) * h / th
    (tw, th), base = cv2.getTextSize(str(digit), font, scale, thick)
    x = (w - tw) // 2 + int(rng.integers(-2, 3))
    y = (h + th) // 2 + int(rng.integers(-2, 3))
    cv2.putText(img, str(digit), (x, y), font, scale, fg.tolist(), thick, cv2.LINE_AA)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-15, 15), 1.0)
    img = cv2.warpAffine(img, rot, (w, h), borderValue=bg.tolist())
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def make_images():
    out = fresh_dir("images")
    rng = np.random.default_rng(1234)
    sizes = [(28, 28)] * 8 + [(32, 32), (36, 28)]  # (height, width)
    kinds = ["png"] * 14 + ["jpg"] * 4 + ["bmp", "webp"]
    special = {0: "png16", 11: "rgba", 22: "exif", 133: "png16", 144: "rgba", 255: "exif"}
    for idx in range(600):
        digit, cls_dir = idx % 10, out / str(idx % 10)
        cls_dir.mkdir(exist_ok=True)
        kind = special.get(idx) or kinds[int(rng.integers(len(kinds)))]
        h, w = (36, 28) if kind == "exif" else sizes[int(rng.integers(len(sizes)))]
        img = draw_digit(rng, digit, h, w)
        stem = cls_dir / f"img_{idx:04d}"
        if kind == "png16":  # 16-bit greyscale PNG
            grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
            cv2.imwrite(f"{stem}.png", grey)
        elif kind == "rgba":  # RGBA PNG with a varying alpha channel
            alpha = np.full((h, w, 1), 255, np.uint8)
            alpha[:, : w // 4] = 128
            cv2.imwrite(f"{stem}.png", np.concatenate([img, alpha], axis=2))
        elif kind == "exif":  # stored rotated 90 deg CCW; orientation 6 turns it upright
            pil = Image.fromarray(np.ascontiguousarray(np.rot90(img[:, :, ::-1])))
            exif = Image.Exif()
            exif[0x0112] = 6
            pil.save(f"{stem}.jpg", quality=90, exif=exif)
        elif kind == "jpg":
            cv2.imwrite(f"{stem}.jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        elif kind == "webp":
            cv2.imwrite(f"{stem}.webp", img, [cv2.IMWRITE_WEBP_QUALITY, 90])
        else:
            cv2.imwrite(f"{stem}.{kind}", img)


def ogg_crc(data):
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


def fix_ogg_serial(path, serial):
    """libsndfile picks a random Ogg stream serial; pin it and redo page CRCs."""
    data, out, pos = Path(path).read_bytes(), bytearray(), 0
    while pos < len(data):
        nseg = data[pos + 26]
        size = 27 + nseg + sum(data[pos + 27: pos + 27 + nseg])
        page = bytearray(data[pos: pos + size])
        page[14:18] = struct.pack("<I", serial)
        page[22:26] = b"\0\0\0\0"
        page[22:26] = struct.pack("<I", ogg_crc(page))
        out += page
        pos += size
    Path(path).write_bytes(bytes(out))


def make_audio():
    out = fresh_dir("audio")
    rng = np.random.default_rng(5678)
    classes, formats = ["tone", "chirp", "noise"], ["wav", "flac", "ogg"]
    for idx in range(150):
        label = classes[idx % 3]
        sr = int(rng.choice([8000, 16000, 22050], p=[0.7, 0.2, 0.1]))
        t = np.arange(int(sr * rng.uniform(0.5, 1.5))) / sr
        if label == "tone":
            f0 = rng.uniform(300, 1200)
            sig = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * k * f0 * t)
                      for k in range(1, 4) if k * f0 < sr / 2)
        elif label == "chirp":
            f_a, f_b = rng.uniform(200, 600), rng.uniform(1500, min(3500, sr / 2 - 200))
            f_a, f_b = (f_a, f_b) if rng.random() < 0.5 else (f_b, f_a)
            sig = np.sin(2 * np.pi * (f_a * t + (f_b - f_a) * t**2 / (2 * t[-1])))
        else:
            sig = rng.normal(0, 1, t.size)
            if rng.random() < 0.5:  # crude band-pass: FFT mask
                spec = np.fft.rfft(sig)
                freqs = np.fft.rfftfreq(t.size, 1 / sr)
                lo = rng.uniform(300, 1500)
                spec[(freqs < lo) | (freqs > lo + rng.uniform(500, 2000))] = 0
                sig = np.fft.irfft(spec, t.size)
            bursts = np.repeat(rng.random(int(np.ceil(t.size / (sr // 10)))) < 0.7, sr // 10)
            sig = sig * bursts[: t.size]
        sig = sig / (np.max(np.abs(sig)) + 1e-9) * rng.uniform(0.2, 0.8)
        sig = sig + rng.normal(0, 0.01, t.size)
        if idx % 8 == 5:  # a few stereo clips: slightly different channel gains
            sig = np.stack([sig, sig * rng.uniform(0.6, 1.0)], axis=1)
        fmt = formats[(idx // 3) % 3]
        path = out / label / f"clip_{idx:04d}.{fmt}"
        path.parent.mkdir(exist_ok=True)
        sig = np.clip(sig, -1, 1).astype(np.float32)
        if fmt == "ogg":
            sf.write(path, sig, sr, format="OGG", subtype="VORBIS")
            fix_ogg_serial(path, 1000 + idx)
        else:
            sf.write(path, sig, sr, subtype="PCM_16")


NOTES = ["", "", "", "happy with service", "asked about discounts, twice",
         'said "too expensive"', 'called re: "billing error", resolved',
         "moved house; new address", 'wants "pro" plan, but cheaper', "no comment",
         "late payment, reminder sent", 'quote: "I\'ll think about it"']


def make_tabular():
    out = fresh_dir("tabular")
    rng = np.random.default_rng(91011)
    n = 400
    age = rng.integers(18, 80, n)
    income = np.round(rng.lognormal(10.8, 0.45, n), 2)
    tenure = rng.integers(0, 73, n)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[0.5, 0.3, 0.2])
    region = rng.choice(["north", "south", "east", "west"], n)
    base = np.select([plan == "basic", plan == "plus"], [30.0, 55.0], 90.0)
    spend = np.round(base + rng.normal(0, 12, n).clip(-25, None), 2)
    calls = rng.poisson(1.5, n)
    score = (-0.1 * tenure + 1.2 * calls + 0.04 * (spend - 50) - 0.03 * (age - 45)
             + np.where(region == "south", 1.0, 0.0) + rng.logistic(0, 1, n))
    churn = score > np.quantile(score, 0.65)  # ~35% "yes", logistic noise
    rows = []
    for i in range(n):
        rows.append({"customer_id": f"C{i + 1:05d}", "age": age[i], "income": f"{income[i]:.2f}",
                     "tenure_months": tenure[i], "plan": plan[i], "region": region[i],
                     "monthly_spend": f"{spend[i]:.2f}", "support_calls": calls[i],
                     "churn": "yes" if churn[i] else "no",
                     "notes": NOTES[int(rng.integers(len(NOTES)))]})
    for row in rows:  # punch holes: ~5% of numeric, ~3% of categorical values
        for col in ["age", "income", "tenure_months", "monthly_spend", "support_calls"]:
            if rng.random() < 0.05:
                row[col] = ""
        for col in ["plan", "region"]:
            if rng.random() < 0.03:
                row[col] = ""
    with open(out / "customers.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), quoting=csv.QUOTE_MINIMAL,
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


SUBJECTS = ["the battery", "the screen", "the delivery", "the price", "the sound", "the camera", "the build",
            "the keyboard", "the charger", "the support team", "the app", "the packaging", "the fit", "the manual"]
GOOD = ["great", "excellent", "reliable", "fantastic", "solid", "impressive", "comfortable", "fast", "sharp", "sturdy"]
BAD = ["terrible", "awful", "flimsy", "slow", "disappointing", "noisy", "useless", "cheap", "faulty", "poor"]
INTENSIFIERS = ["", "", "", "very ", "really ", "quite ", "truly "]
VERBS = ["is", "was", "seems", "felt"]
FILLER = ["I bought it for my brother.", "It arrived on a Tuesday.", "We use it every day at home.",
          "I compared three models before buying.", "My old one lasted five years.", "Ordered the blue version.",
          "It replaced a café espresso machine, oddly enough.", "Used it on a naïve test run first.",
          "The box said made in 2024.", "I read the reviews before ordering."]
CLOSERS = {1: ["Would buy again.", "Recommended.", "Five stars from me.", "Happy overall."],
           -1: ["Would not buy again.", "Returned it.", "One star.", "Not happy overall."]}


def review(rng, polarity):
    """A review of several clauses; each clause's sentiment is its adjective's, flipped by a negation."""
    clauses = int(rng.integers(2, 5))
    # Most clauses agree with the review's polarity; one may not (mixed reviews).
    signs = [polarity] * clauses
    if clauses > 2 and rng.random() < 0.5:
        signs[int(rng.integers(clauses))] = -polarity
    sentences = []
    for sign in signs:
        negated = rng.random() < 0.5
        adjective_sign = -sign if negated else sign
        adjective = str(rng.choice(GOOD if adjective_sign > 0 else BAD))
        subject = str(rng.choice(SUBJECTS))
        verb = str(rng.choice(VERBS))
        text = f"{subject} {verb} {'not ' if negated else ''}{rng.choice(INTENSIFIERS)}{adjective}"
        sentences.append(text[0].upper() + text[1:] + str(rng.choice([".", ".", "!", "..."])))
        if rng.random() < 0.3:
            sentences.append(str(rng.choice(FILLER)))
    if rng.random() < 0.3:  # the closer gives the verdict away: only sometimes
        sentences.append(str(rng.choice(CLOSERS[polarity])))
    return " ".join(sentences)


def make_text():
    out = fresh_dir("text")
    rng = np.random.default_rng(121314)
    for i in range(1000):
        polarity = 1 if i % 2 == 0 else -1
        text = review(rng, polarity)
        if rng.random() < 0.04:  # label noise: a careless reviewer
            polarity = -polarity
        folder = out / ("positive" if polarity > 0 else "negative")
        folder.mkdir(exist_ok=True)
        data = text.encode("utf-8")
        if i % 97 == 0:
            data = b"\xef\xbb\xbf" + data  # a UTF-8 BOM, as Windows editors write
        if i % 89 == 0:
            data = data.replace(b". ", b".\r\n")
        (folder / f"review_{i:04d}.txt").write_bytes(data + b"\n")


MAKERS = {"images": make_images, "audio": make_audio, "tabular": make_tabular, "text": make_text}

if __name__ == "__main__":
    for name in sys.argv[1:] or MAKERS:
        MAKERS[name]()
    print(f"sample data written under {ROOT}")
