"""An identity system on PostgreSQL changing face model from A to B through facebridge, end to end.

What it plays, against a real PostgreSQL and a running facebridge service:

1. **Enrol** PEOPLE people of LFW (one photo each) with model A into `identity.people.template`
   (`real[]`); `identity.settings` says which model the stored templates belong to.
2. **Before**: each person authenticates with another photo of themselves (genuine) and with a photo
   of the next person claiming to be them (impostor), captured with model A: native A /verify.
3. **During**: the capture devices now run model B. `facebridge migrate` fills `template_b` in place
   (BATCH_ROWS rows a batch, PAUSE seconds between batches, as a gentle production run would)
   while authentications go on, each comparing the stored A template with the B probe across models
   (/verify with two models). Meanwhile LATE new people are enrolled and UPDATED people re-enrolled
   with model A: the migration must pick them up.
4. **Swap**: `facebridge migrate --swap` renames the columns and flips `identity.settings` to B in one
   transaction.
5. **After**: NEW people enrol with model B alone; native B /verify between all stored templates
   (migrated and new) and the B probes.

It prints, per phase, the threshold each answer stated and the genuine and impostor acceptance, and
exits 1 unless every phase accepts genuine attempts and rejects impostors at the rates the service
stated, within a binomial tolerance (see `check`), and the migration's own check passed.

    DATABASE_URL=postgresql://identity:identity@127.0.0.1:55432/identity \\
    FACEBRIDGE_URL=http://127.0.0.1:8000 FACEBRIDGE_API_KEY=... LFW_DIR=../shared/datasets/lfw \\
    python examples/identity_system.py

(docker-compose runs it as the `identity-client` service; docs/identity-system.md walks through it.)
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from facebridge.client import Client, ServiceError

URL = os.environ.get("FACEBRIDGE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ.get("FACEBRIDGE_API_KEY") or None
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://identity:identity@127.0.0.1:55432/identity")
MODEL_A = os.environ.get("MODEL_A", "arcface-mbf128")
MODEL_B = os.environ.get("MODEL_B", "sirius-mbf192")
LFW_DIR = Path(os.environ.get("LFW_DIR", "/lfw"))
PEOPLE = int(os.environ.get("PEOPLE", "300"))
LATE = int(os.environ.get("LATE", "20"))
UPDATED = int(os.environ.get("UPDATED", "20"))
NEW = int(os.environ.get("NEW", "20"))
FAR = float(os.environ.get("FAR", "0.001"))
BATCH_ROWS = int(os.environ.get("BATCH_ROWS", "10"))
PAUSE = float(os.environ.get("PAUSE", "0.25"))  # between batches: the migration then spans the attempts
TAR_TOLERANCE = float(os.environ.get("TAR_TOLERANCE", "0.03"))
SEED = int(os.environ.get("SEED", "0"))
TABLE = "identity.people"
JOB = f"{TABLE}.template->template_b"  # how facebridge migrate names the job


@dataclass
class Person:
    user_id: int
    name: str
    enrol: Path
    probe: Path
    other: Path | None = None  # a third photo, for re-enrolment during the migration


@dataclass
class Phase:
    """Acceptance counts of one phase and what the service stated for its answers."""

    name: str
    comparison: str
    genuine: list[bool] = field(default_factory=list)
    impostor: list[bool] = field(default_factory=list)
    stated: dict[str, Any] = field(default_factory=dict)
    during_migration: int = 0

    def add(self, genuine: bool, result: Any) -> None:
        (self.genuine if genuine else self.impostor).append(bool(result.match))
        self.stated = {
            "threshold": result.threshold,
            "operating_point": result.operating_point,
            "far": result.far_at_threshold,
            "far_interval": tuple(result.far_interval) if result.far_interval else None,
            "far_range": tuple(result.far_range) if result.far_range else None,
            "tar": result.tar_at_threshold,
            "comparison": result.comparison,
            "space": result.space,
        }


# ------------------------------------------------------------------------------------------- people
def choose_people() -> tuple[list[Person], list[Person], list[Person]]:
    """PEOPLE + LATE + NEW people of LFW with at least two photos, drawn with SEED: enrolled at the
    start, while the migration runs, and with model B after the swap."""
    folders = sorted(p for p in LFW_DIR.iterdir() if p.is_dir())
    usable = [f for f in folders if len(list(f.glob("*.jpg"))) >= 2]
    wanted = PEOPLE + LATE + NEW
    if len(usable) < wanted:
        raise SystemExit(f"{LFW_DIR} has {len(usable)} people with two photos; {wanted} are needed")
    picked = np.random.default_rng(SEED).choice(len(usable), wanted, replace=False)
    people = []
    for number, index in enumerate(sorted(picked.tolist())):
        photos = sorted(usable[index].glob("*.jpg"))
        other = photos[2] if len(photos) > 2 else None
        people.append(Person(number + 1, usable[index].name, photos[0], photos[1], other))
    return people[:PEOPLE], people[PEOPLE : PEOPLE + LATE], people[PEOPLE + LATE :]


def embed_all(client: Client, photos: list[Path], models: list[str]) -> list[dict[str, list[float]] | None]:
    """Each photo's largest face embedded by `models` (None where no face is found)."""
    found: list[dict[str, list[float]] | None] = []
    for start in range(0, len(photos), 16):
        answer = client.embed(photos[start : start + 16], models, largest_only=True)
        for result in answer.results:
            faces = result.faces
            found.append({e.model: e.embedding for e in faces[0].embeddings} if faces else None)
    return found


# ------------------------------------------------------------------------------------------- database
def create_schema(conn: psycopg.Connection) -> None:
    conn.execute("DROP SCHEMA IF EXISTS identity CASCADE")
    conn.execute("CREATE SCHEMA identity")
    conn.execute(
        "CREATE TABLE identity.people (user_id bigint PRIMARY KEY, name text NOT NULL, "
        "template real[] NOT NULL, enrolled_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute("CREATE TABLE identity.settings (name text PRIMARY KEY, value text NOT NULL)")
    conn.execute("INSERT INTO identity.settings VALUES ('model', %s)", (MODEL_A,))
    for name in ("facebridge_migrations", "facebridge_migration_batches", "facebridge_migration_problems"):
        conn.execute(f"DROP TABLE IF EXISTS {name}")  # an earlier run's progress


def enrol(conn: psycopg.Connection, person: Person, template: list[float]) -> None:
    conn.execute(
        "INSERT INTO identity.people (user_id, name, template) VALUES (%s, %s, %s) "
        "ON CONFLICT (user_id) DO UPDATE SET template = excluded.template, enrolled_at = now()",
        (person.user_id, person.name, template),
    )


def authenticate(
    client: Client, conn: psycopg.Connection, user_id: int, probe: list[float], model: str
) -> Any:
    """What the identity system does at a door: load the claimed user's stored template and the model it
    belongs to, and ask facebridge whether the probe is the same person."""
    row = conn.execute(
        "SELECT s.value, p.template FROM identity.people p, identity.settings s "
        "WHERE p.user_id = %s AND s.name = 'model'",
        (user_id,),
    ).fetchone()
    assert row is not None, f"user {user_id} is not enrolled"
    stored_model, template = row
    return client.verify(
        np.asarray(template, np.float32), stored_model, np.asarray(probe, np.float32), model, far=FAR
    ).results[0]


# ------------------------------------------------------------------------------------------- checks
def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def check(phase: Phase, stated_tar: float | None) -> list[str]:
    """Impostors: the accepted count must be plausible (one-sided binomial p ≥ 0.01) at the highest
    FAR the answer stated (`far_range`, else the calibration interval). Genuine: the acceptance rate
    must be at least the stated TAR minus TAR_TOLERANCE, or plausible at that rate (p ≥ 0.01)."""
    failures = []
    far_high = (
        phase.stated.get("far_range") or phase.stated.get("far_interval") or (0, phase.stated["far"])
    )[1]
    false_accepts, n_impostor = sum(phase.impostor), len(phase.impostor)
    if binomial_tail(false_accepts, n_impostor, far_high) < 0.01:
        failures.append(
            f"{phase.name}: {false_accepts}/{n_impostor} impostors accepted; stated FAR up to {far_high:.2g}"
        )
    if stated_tar is not None:
        accepted, n_genuine = sum(phase.genuine), len(phase.genuine)
        floor = stated_tar - TAR_TOLERANCE
        rejected_tail = binomial_tail(n_genuine - accepted, n_genuine, 1 - floor)
        if accepted / n_genuine < floor and rejected_tail < 0.01:
            failures.append(
                f"{phase.name}: {accepted}/{n_genuine} genuine accepted; stated TAR {stated_tar:.3f} "
                f"(tolerance {TAR_TOLERANCE})"
            )
    return failures


def run_migration(extra: list[str]) -> subprocess.Popen[str]:
    url = f"{DATABASE_URL}{'&' if '?' in DATABASE_URL else '?'}table={TABLE}&id=user_id&column=template"
    command = [
        "facebridge",
        "migrate",
        "--source",
        MODEL_A,
        "--target",
        MODEL_B,
        url,
        "--to-column",
        "template_b",
    ]
    return subprocess.Popen(
        [*command, "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_until_running(conn: psycopg.Connection, migration: subprocess.Popen[str]) -> None:
    """Until the migration has registered its job (the process first loads the maps)."""
    deadline = time.monotonic() + 120
    while migration.poll() is None and time.monotonic() < deadline:
        try:
            row = conn.execute(f"SELECT state FROM facebridge_migrations WHERE job = '{JOB}'").fetchone()
            if row is not None and row[0] == "running":
                return
        except psycopg.errors.UndefinedTable:
            pass
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------- main
def main() -> int:
    client = Client(URL, API_KEY, timeout=120)
    deadline = time.monotonic() + 300
    while True:
        try:
            client.ready()
            break
        except (ServiceError, OSError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"facebridge at {URL} not ready: {exc}") from exc
            time.sleep(2)
    conn = psycopg.connect(DATABASE_URL, autocommit=True)
    create_schema(conn)
    people, late, new = choose_people()
    started = time.perf_counter()
    enrolled = embed_all(client, [p.enrol for p in people + late], [MODEL_A])
    probes = embed_all(client, [p.probe for p in people + late], [MODEL_A, MODEL_B])
    updates = [p for p in people if p.other is not None][:UPDATED]
    re_enrolled = embed_all(client, [p.other for p in updates if p.other], [MODEL_A])
    templates = {p.user_id: e[MODEL_A] for p, e in zip(people + late, enrolled, strict=True) if e}
    probe_of = {p.user_id: e for p, e in zip(people + late, probes, strict=True) if e}
    active = [p for p in people if p.user_id in templates and p.user_id in probe_of]
    for person in active:
        enrol(conn, person, templates[person.user_id])
    seconds = time.perf_counter() - started
    print(f"enrolled {len(active)} people with {MODEL_A} into {TABLE} ({seconds:.0f} s of /embed)")

    def attempts(group: list[Person]) -> list[tuple[int, int, bool]]:
        """(claimed user, whose probe, genuine): each person once, and the next person claiming them."""
        return [(p.user_id, p.user_id, True) for p in group] + [
            (p.user_id, group[(i + 1) % len(group)].user_id, False) for i, p in enumerate(group)
        ]

    # ---- before: native A
    before = Phase("before", f"{MODEL_A} template vs {MODEL_A} probe")
    for claimed, whose, genuine in attempts(active):
        before.add(genuine, authenticate(client, conn, claimed, probe_of[whose][MODEL_A], MODEL_A))

    # ---- during: B probes against A templates while the migration runs; enrolments go on with A
    during = Phase("during", f"{MODEL_A} template vs {MODEL_B} probe (cross-model)")
    migration = run_migration(["--batch-rows", str(BATCH_ROWS), "--pause", str(PAUSE)])
    wait_until_running(conn, migration)
    attempt_times: list[float] = []
    late_ok = [p for p in late if p.user_id in templates and p.user_id in probe_of]
    writes = [("enrol", p, templates[p.user_id]) for p in late_ok] + [
        ("re-enrol", p, e[MODEL_A]) for p, e in zip(updates, re_enrolled, strict=True) if e
    ]
    round_ = attempts(active)
    done = 0
    while done < len(round_) or migration.poll() is None:
        claimed, whose, genuine = round_[done % len(round_)]
        attempted_at = time.time()
        result = authenticate(client, conn, claimed, probe_of[whose][MODEL_B], MODEL_B)
        if done < len(round_):
            during.add(genuine, result)
            attempt_times.append(attempted_at)
        if writes and done % 5 == 0:
            _, person, template = writes.pop(0)
            enrol(conn, person, template)
        done += 1
    for _, person, template in writes:  # whatever the migration outran
        enrol(conn, person, template)
    output, _ = migration.communicate()
    print(output.strip())
    if migration.returncode != 0:
        print(f"migration failed ({migration.returncode})")
        return 1
    # the migration's own record of when it ran (the database's clock, on this host)
    window = conn.execute(
        "SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at) FROM facebridge_migrations "
        "WHERE job = %s",
        (JOB,),
    ).fetchone()
    if window is not None:
        began, ended = float(window[0]), float(window[1])
        during.during_migration = sum(began <= t <= ended for t in attempt_times)

    # ---- swap: the columns and the model setting change in one transaction
    swap = run_migration(
        ["--swap", "--swap-also", f"UPDATE identity.settings SET value = '{MODEL_B}' WHERE name = 'model'"]
    )
    output, _ = swap.communicate()
    print(output.strip())
    if swap.returncode != 0:
        return 1

    # ---- after: new people enrol with B alone; native B against migrated and new templates
    new_templates = embed_all(client, [p.enrol for p in new], [MODEL_B])
    new_probes = embed_all(client, [p.probe for p in new], [MODEL_A, MODEL_B])
    new_ok = []
    for person, embedded, probe in zip(new, new_templates, new_probes, strict=True):
        if embedded and probe:
            enrol(conn, person, embedded[MODEL_B])
            probe_of[person.user_id] = probe
            new_ok.append(person)
    everyone = active + late_ok + new_ok
    after = Phase("after", f"{MODEL_B} template (migrated or new) vs {MODEL_B} probe")
    for claimed, whose, genuine in attempts(everyone):
        after.add(genuine, authenticate(client, conn, claimed, probe_of[whose][MODEL_B], MODEL_B))
    setting = conn.execute("SELECT value FROM identity.settings WHERE name = 'model'").fetchone()
    stored_model = setting[0] if setting else None

    print()
    print(
        "| phase | comparison | threshold (cosine) | stated FAR [range] | stated TAR "
        "| genuine accepted | impostors accepted |"
    )
    print("|---|---|---:|---|---:|---:|---:|")
    for phase in (before, during, after):
        s = phase.stated
        rng = s.get("far_range") or s.get("far_interval")
        far_text = f"{s['far']:.1e}" + (f" [{rng[0]:.1e}, {rng[1]:.1e}]" if rng else "")
        tar_text = f"{s['tar']:.3f}" if s.get("tar") is not None else "-"
        print(
            f"| {phase.name} | {phase.comparison} | {s['threshold']:.4f} ({s['operating_point']}) "
            f"| {far_text} "
            f"| {tar_text} | {sum(phase.genuine)}/{len(phase.genuine)} ({np.mean(phase.genuine):.1%}) "
            f"| {sum(phase.impostor)}/{len(phase.impostor)} ({np.mean(phase.impostor):.2%}) |"
        )
    print(
        f"\n{during.during_migration} of the {len(during.genuine) + len(during.impostor)} 'during' "
        f"attempts ran between the migration's start and end in facebridge_migrations; "
        f"{len(late_ok)} people enrolled and "
        f"{len([w for w in re_enrolled if w])} re-enrolled meanwhile, {len(new_ok)} enrolled with "
        f"{MODEL_B} after the swap; stored templates now belong to {stored_model}"
    )
    # After the swap the stored templates are translations, so the rates to hold are the map's
    # cross-model ones (stated in the 'during' answers), not those of native B enrolments.
    failures = check(before, before.stated.get("tar")) + check(during, during.stated.get("tar"))
    failures += check(after, during.stated.get("tar"))
    if stored_model != MODEL_B:
        failures.append(f"identity.settings still names {stored_model}")
    for failure in failures:
        print("FAILED:", failure)
    print("identity system roll-out: " + ("OK" if not failures else "FAILED"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
