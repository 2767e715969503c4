"""A roll-out from arcface-mbf128 to sirius-mbf192, as an identity system runs it through facebridge.

1. Roll-out: for its first captures the system embeds each photo with both models (POST /embed with
   `record`), so facebridge stores the pair of templates under an opaque subject id (never the photo).
2. Refit: `facebridge refit` fits the arcface -> sirius map on public photos plus those pairs, scores
   it against the shipped map on the recorded subjects it held out, and writes it only if it is
   better; POST /admin/reload-mappings makes the service use it.
3. Migration: the gallery (arcface templates of people who were NOT recorded) is translated with the
   per-template confidence; the least confident 10% are re-enrolled with sirius (here: embedded again
   from their photo, as a re-enrolment would), the rest keep their translated template.
4. Authentication with sirius probes against the migrated gallery (POST /verify at FAR 1e-3): TAR
   and FAR printed, with the thresholds used.

The people are CelebA-dev's (../shared/datasets/celeba-dev, one folder per person), split in half by a
seeded draw: half A are the recorded captures, half B the gallery and its probes. The service must run
with a pair store, e.g.

    FACEBRIDGE_PAIRS_DB=rollout.sqlite FACEBRIDGE_API_KEYS=k facebridge serve &
    FACEBRIDGE_API_KEY=k python examples/rollout.py --photos ../shared/datasets/celeba-dev --base lfw
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facebridge.client import Client, ServiceError

A, B = "arcface-mbf128", "sirius-mbf192"


def people(root: Path, seed: int) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(recorded half, gallery half): person -> photos."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    photos = {f.name: sorted(f.glob("*.jpg")) for f in folders}
    names = sorted(n for n, p in photos.items() if len(p) >= 2)
    chosen = set(np.random.default_rng(seed).choice(names, len(names) // 2, replace=False).tolist())
    return {n: photos[n] for n in names if n in chosen}, {n: photos[n] for n in names if n not in chosen}


def record(client: Client, recorded: dict[str, list[Path]], limit: int) -> int:
    """Step 1: the first `limit` captures, embedded by both models and recorded as pairs."""
    done = 0
    for person, photos in recorded.items():
        for photo in photos:
            if done >= limit:
                return done
            try:
                client.embed(photo, [A, B], largest_only=True, record_subject=f"subject-{person}")
            except ServiceError as error:  # a photo without a face is skipped, as a capture would be
                if error.code != "no-face":
                    raise
                continue
            done += 1
    return done


def embed_one(client: Client, photo: Path, model: str) -> np.ndarray | None:
    try:
        faces = client.embed(photo, [model], largest_only=True).results[0].faces
    except ServiceError as error:
        if error.code == "no-face":
            return None
        raise
    return np.asarray(faces[0].embeddings[0].embedding, np.float32)


def migrate_and_authenticate(
    client: Client, gallery: dict[str, list[Path]], reenrol: float, seed: int
) -> str:
    """Steps 3-4: enrol each gallery person's first photo with A, translate, re-enrol the least
    confident share with B, then verify every other photo (B) against every gallery template."""
    names, enrolled, probes = [], [], []
    for person, photos in gallery.items():
        template = embed_one(client, photos[0], A)
        if template is None:
            continue
        names.append(person)
        enrolled.append(template)
        probes += [(person, p) for p in photos[1:]]
    moved = client.translate(np.stack(enrolled), A, B)
    confidence = moved.confidence
    templates = moved.embeddings.copy()
    count = round(reenrol * len(templates))
    order = (
        np.argsort(confidence)
        if confidence is not None
        else np.random.default_rng(seed).permutation(len(templates))
    )
    for index in order[:count]:
        native = embed_one(client, gallery[names[index]][0], B)
        if native is not None:
            templates[index] = native / np.linalg.norm(native)
    genuine_accepted = genuine = impostor_accepted = impostor = 0
    threshold = None
    for person, photo in probes:
        probe = embed_one(client, photo, B)
        if probe is None:
            continue
        pairs = [((B, templates[i].tolist()), (B, probe.tolist())) for i in range(len(names))]
        results = client.verify_pairs(pairs, far=1e-3).results
        threshold = results[0].threshold
        for i, result in enumerate(results):
            if names[i] == person:
                genuine, genuine_accepted = genuine + 1, genuine_accepted + int(result.match)
            else:
                impostor, impostor_accepted = impostor + 1, impostor_accepted + int(result.match)
    return (
        f"{len(names)} gallery people ({count} re-enrolled with {B}, least confident first), "
        f"{genuine} genuine and {impostor} impostor attempts at far_1e-3 (threshold {threshold:.4f}): "
        f"TAR {genuine_accepted / max(genuine, 1):.4f}, FAR {impostor_accepted / max(impostor, 1):.2e}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/datasets/celeba-dev"))
    parser.add_argument("--url", default=os.environ.get("FACEBRIDGE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--captures", type=int, default=10_000, help="recorded captures (first N)")
    parser.add_argument("--base", action="append", default=[], help="embedding caches to refit with (lfw)")
    parser.add_argument("--pairs", help="the service's pair store (FACEBRIDGE_PAIRS_DB / _DSN) for the refit")
    parser.add_argument("--reenrol", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recorded, gallery = people(args.photos, args.seed)
    with Client(args.url, os.environ.get("FACEBRIDGE_API_KEY"), timeout=300) as client:
        started = time.time()
        print(
            f"before the refit: {migrate_and_authenticate(client, gallery, args.reenrol, args.seed)}",
            flush=True,
        )
        n = record(client, recorded, args.captures)
        print(f"recorded {n} captures of {len(recorded)} people ({time.time() - started:.0f} s)", flush=True)
        command = [sys.executable, "-m", "facebridge", "refit", "--source", A, "--target", B]
        command += [a for name in args.base for a in ("--base", name)]
        command += ["--pairs", args.pairs] if args.pairs else []
        print("$ " + " ".join(command), flush=True)
        subprocess.run(command, check=True)
        print(f"reloaded: {client.reload_mappings().maps}", flush=True)
        print(f"after the refit: {migrate_and_authenticate(client, gallery, args.reenrol, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
