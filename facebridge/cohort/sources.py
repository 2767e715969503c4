"""Where a cohort's templates come from: photos, a .npy, a Parquet file, a PostgreSQL table, the pair store.

Every source ends in `make_cohort`, and every source follows the same two rules, so that the same
templates give the same cohort (same tensor, same sha256) whichever way they were exported:

- row order is the source's own (sorted photo paths, file rows, the table's key, the store's pairs
  oldest first); rows that cannot be templates (NULL, wrong dimension, NaN or infinity, all zeros) are
  skipped and counted in the provenance note, never fatal, since a gallery of thousands of rows often
  holds a few broken ones;
- with more usable templates than `max_size`, the kept rows are `make_cohort`'s seeded sample
  (`np.sort(default_rng(seed).choice(n, max_size, replace=False))` over the usable rows).

The file and table sources are read in batches, twice when a sample is needed: the first pass counts
the usable rows (keeping them only while they fit `max_size`), the second keeps the sampled ones. So a
gallery of millions of templates becomes a cohort in the memory of `max_size` templates and one batch;
a PostgreSQL table is read in one REPEATABLE READ transaction, so both passes see the same rows.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import numpy as np

from facebridge.cohort.cohortfile import Cohort, CohortError, make_cohort, sample_rows
from facebridge.mapping.mapfile import SpaceRef

if TYPE_CHECKING:
    import pyarrow as pa

    from facebridge.vision.pipeline import FacePipeline

BATCH_ROWS = 10_000  # rows decoded at once from a file or a table
EMBED_BATCH = 32  # aligned crops per recognizer call
NULL, WRONG_DIM, NON_FINITE, ZERO = "NULL", "wrong dimension or malformed", "NaN or infinity", "all zeros"


# ---------------------------------------------------------------------------------------------- rows
@dataclass
class Batch:
    """Usable raw templates of one batch of source rows (in order) and why the others were skipped."""

    matrix: np.ndarray
    rows: int
    skipped: Counter[str] = field(default_factory=Counter)
    groups: list[str] | None = None  # each kept row's person, where the source knows it


def screen(
    matrix: np.ndarray,
    rows: int | None = None,
    skipped: Counter[str] | None = None,
    groups: list[str] | None = None,
) -> Batch:
    """Drop the rows no template can be (NaN or infinity, all zeros), counting them; `groups` (one per
    row of `matrix`) keep the rows kept."""
    matrix = np.asarray(matrix, dtype=np.float32)
    counts: Counter[str] = Counter(skipped or {})
    finite = np.isfinite(matrix).all(axis=1)
    nonzero = np.zeros(len(matrix), dtype=bool)
    nonzero[finite] = (matrix[finite] != 0).any(axis=1)
    if (~finite).any():
        counts[NON_FINITE] += int((~finite).sum())
    if (finite & ~nonzero).any():
        counts[ZERO] += int((finite & ~nonzero).sum())
    keep = finite & nonzero
    if groups is not None and not keep.all():
        groups = [g for g, kept in zip(groups, keep, strict=True) if kept]
    kept = matrix if keep.all() else matrix[keep]
    return Batch(kept, len(matrix) if rows is None else rows, counts, groups)


@dataclass
class Gathered:
    matrix: np.ndarray
    rows: int
    usable: int
    sampled: bool
    skipped: Counter[str]
    groups: list[str] | None = None


def gather(batches: Callable[[], Iterator[Batch]], dim: int, max_size: int | None, seed: int) -> Gathered:
    """The usable templates of a source read batch by batch, sampled to `max_size` like make_cohort.

    `batches()` must give the same rows each time it is called (the second pass relies on it)."""
    if max_size is not None and max_size < 1:
        raise CohortError(f"the cohort's maximum size must be at least 1, not {max_size}")
    kept: list[np.ndarray] = []
    kept_groups: list[str] | None = []
    rows = usable = 0
    skipped: Counter[str] = Counter()
    for batch in batches():
        rows += batch.rows
        skipped.update(batch.skipped)
        usable += len(batch.matrix)
        if max_size is None or usable <= max_size:
            kept.append(batch.matrix)
            if batch.groups is None or kept_groups is None:
                kept_groups = None
            else:
                kept_groups.extend(batch.groups)
        else:
            kept = []  # a sample will be needed: the second pass picks its rows
    if max_size is None or usable <= max_size:
        matrix = np.concatenate(kept) if kept else np.empty((0, dim), np.float32)
        return Gathered(matrix, rows, usable, False, skipped, kept_groups if kept else None)
    positions = sample_rows(usable, max_size, seed)
    picked: list[np.ndarray] = []
    picked_groups: list[str] | None = []
    offset = 0
    for batch in batches():
        lo, hi = np.searchsorted(positions, [offset, offset + len(batch.matrix)])
        if hi > lo:
            picked.append(batch.matrix[positions[lo:hi] - offset])
            if batch.groups is None or picked_groups is None:
                picked_groups = None
            else:
                picked_groups.extend(batch.groups[i] for i in positions[lo:hi] - offset)
        offset += len(batch.matrix)
    if offset != usable:
        raise CohortError(f"the source changed while it was read ({usable} usable rows, then {offset})")
    return Gathered(np.concatenate(picked), rows, usable, True, skipped, picked_groups)


def finish(
    gathered: Gathered,
    space: SpaceRef,
    kind: str,
    source: str,
    seed: int,
    what: str = "rows",
    extra: list[str] | None = None,
) -> Cohort:
    """`make_cohort` of what was gathered, with the skipped rows said in the note."""
    notes = list(extra or [])
    if gathered.skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(gathered.skipped.items()))
        notes.insert(0, f"skipped {sum(gathered.skipped.values())} of {gathered.rows} {what} ({reasons})")
    if gathered.sampled:
        notes.append(f"seeded sample (seed {seed}) of {gathered.usable} usable templates")
    note = "; ".join(notes) or None
    if len(gathered.matrix) == 0:
        raise CohortError(f"{source}: no usable templates ({note or f'{gathered.rows} {what}'})")
    return make_cohort(
        gathered.matrix,
        space,
        kind,
        source,
        rows_read=gathered.rows,
        seed=seed,
        note=note,
        sampled=gathered.sampled,
        groups=gathered.groups,
    )


def in_batches(matrix: Any, size: int = BATCH_ROWS) -> Iterator[Batch]:
    """A (memory-mapped) matrix's rows, screened, `size` at a time."""
    for start in range(0, len(matrix), size):
        yield screen(np.asarray(matrix[start : start + size], dtype=np.float32))


# ---------------------------------------------------------------------------------------------- photos
def list_photos(folder: Path) -> list[str]:
    """Every image under `folder`, at any depth, as sorted relative paths (a deployment's export is not
    always one sub-folder per person, as `embedding_cache.list_images` expects)."""
    from facebridge.embedding_cache import IMAGE_SUFFIXES

    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def person_of(rel: str) -> str:
    """Whose photo `rel` (a path relative to the cohort's folder) is: the folder that holds it, as in
    one sub-folder per person (at any depth: site-a/person/1.jpg is person site-a/person); a photo
    directly in the folder is its own person."""
    folder, _, _ = rel.rpartition("/")
    return folder or rel


def from_photos(
    pipeline: FacePipeline,
    folder: Path,
    model: str,
    max_size: int | None = None,
    seed: int = 0,
    detector: str = "yunet",
) -> Cohort:
    """A cohort embedded from a folder of the deployment's own photos, with its own detector and model.

    Why: a cohort must come from the people (and cameras) the deployment scores, and photos are what
    every deployment has before it has a gallery. Each photo's central face is found as the embedding
    caches find it (`central_face`: thresholds 0.6, 0.3, 0.1), aligned to the model's template and
    embedded in batches. A photo without a face is skipped and counted, not embedded whole as the
    caches do: a template of a background would sit in the cohort as an impostor nobody is. Unreadable
    files are skipped and counted too. Each template's person is its photo's sub-folder
    (`person_of`), recorded so the cohort's own level leaves out pairs of one person.
    """
    from facebridge.embedding_cache import central_face
    from facebridge.exceptions import ImageError
    from facebridge.vision.alignment import align_face
    from facebridge.vision.images import decode_image

    folder = Path(folder)
    if not folder.is_dir():
        raise CohortError(f"{folder}: not a folder of photos")
    recognizer = pipeline.registry.recognizer(model)
    template = pipeline.registry.manifest.templates[recognizer.entry.alignment or ""]
    space = SpaceRef(model=model, dim=recognizer.dim, sha256=recognizer.sha256)
    photos = list_photos(folder)
    if not photos:
        raise CohortError(f"{folder}: no photos (.jpg, .jpeg, .png, .bmp, .webp) in it or below it")
    skipped: Counter[str] = Counter()
    vectors: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    groups: list[str] = []
    for rel in photos:
        try:
            image = decode_image((folder / rel).read_bytes(), max_bytes=1 << 30, max_pixels=1 << 28)
        except (ImageError, OSError):
            skipped["unreadable"] += 1
            continue
        face = central_face(pipeline, image, detector)
        if face is None:
            skipped["without a face"] += 1
            continue
        crops.append(align_face(image, face.landmarks, template))
        groups.append(person_of(rel))
        if len(crops) == EMBED_BATCH:
            vectors.append(recognizer.embed(crops))
            crops = []
    if crops:
        vectors.append(recognizer.embed(crops))
    matrix = np.concatenate(vectors) if vectors else np.empty((0, space.dim), np.float32)
    batch = screen(matrix, len(photos), skipped, groups)
    gathered = gather(lambda: iter([batch]), space.dim, max_size, seed)
    extra = [f"detector {detector}"]
    return finish(gathered, space, "photos", str(folder.resolve()), seed, "photos", extra)


# ---------------------------------------------------------------------------------------------- files
def from_npy(path: Path, space: SpaceRef, max_size: int | None = None, seed: int = 0) -> Cohort:
    """A cohort of an (n, d) .npy of templates already made by the space's model.

    Why: the simplest export of a gallery (or of `facebridge embed` caches); memory-mapped and read in
    batches, so a large matrix costs no more memory than the cohort.
    """
    path = Path(path)
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CohortError(f"{path}: not a readable .npy ({type(exc).__name__}: {exc})") from exc
    if not isinstance(matrix, np.ndarray) or matrix.ndim != 2:
        shape = getattr(matrix, "shape", "?")
        raise CohortError(f"{path}: expected an (n, {space.dim}) matrix, found shape {shape}")
    if matrix.dtype.kind != "f":
        raise CohortError(f"{path}: expected float templates, found dtype {matrix.dtype}")
    if matrix.shape[1] != space.dim:
        raise CohortError(f"{path}: templates have dim {matrix.shape[1]}, {space.model} has dim {space.dim}")
    gathered = gather(lambda: in_batches(matrix), space.dim, max_size, seed)
    return finish(gathered, space, "npy", str(path.resolve()), seed)


def _is_embedding_type(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_fixed_size_binary(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
    )


def parquet_column(schema: pa.Schema, column: str | None, where: str) -> str:
    """The embedding column: `column`, else "embedding", else the only list / binary column."""
    names = schema.names
    if column is not None:
        if column not in names:
            raise CohortError(f"{where}: no column {column!r} (columns: {', '.join(names)})")
        return column
    if "embedding" in names:
        return "embedding"
    candidates = [f.name for f in schema if _is_embedding_type(f.type)]
    if len(candidates) == 1:
        return candidates[0]
    raise CohortError(
        f"{where}: no 'embedding' column; name the templates' column with --column "
        f"(columns: {', '.join(names)})"
    )


def arrow_batch(column: pa.Array, dim: int) -> Batch:
    """Templates of one Arrow batch of a list / fixed-size list / fixed-size binary column; NULL rows
    and list rows of another length are skipped (a whole column of another width is refused)."""
    import pyarrow as pa

    from facebridge.migration.galleries import embeddings_from_arrow

    rows = len(column)
    skipped: Counter[str] = Counter()
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if not valid.all():
        skipped[NULL] += int((~valid).sum())
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = column.value_lengths().fill_null(dim).to_numpy(zero_copy_only=False)
        wrong = valid & (lengths != dim)
        if wrong.any():
            skipped[WRONG_DIM] += int(wrong.sum())
            valid &= ~wrong
    if not valid.all():
        column = column.filter(pa.array(valid))
    try:
        matrix = embeddings_from_arrow(column, dim) if len(column) else np.empty((0, dim), np.float32)
    except ValueError as exc:
        raise CohortError(str(exc)) from exc
    return screen(matrix, rows, skipped)


def from_parquet(
    path: Path, space: SpaceRef, column: str | None = None, max_size: int | None = None, seed: int = 0
) -> Cohort:
    """A cohort of a Parquet file's embedding column (list, fixed-size list or fixed-size binary of
    float32, as `facebridge migrate` reads and writes galleries).

    Why: the usual export of a gallery from a data warehouse. Read in record batches, twice when a
    sample is needed, so the file is never held whole.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        handle = pq.ParquetFile(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CohortError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    name = parquet_column(handle.schema_arrow, column, str(path))
    if not _is_embedding_type(handle.schema_arrow.field(name).type):
        kind = handle.schema_arrow.field(name).type
        raise CohortError(f"{path}: column {name!r} is {kind}, not a list of floats or fixed-size binary")

    def batches() -> Iterator[Batch]:
        for record_batch in handle.iter_batches(batch_size=BATCH_ROWS, columns=[name]):
            try:
                yield arrow_batch(record_batch.column(0), space.dim)
            except CohortError as exc:
                raise CohortError(f"{path}: column {name!r}: {exc}") from exc

    try:
        gathered = gather(batches, space.dim, max_size, seed)
    except (OSError, pa.ArrowException) as exc:
        raise CohortError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    return finish(gathered, space, "parquet", f"{path.resolve()} column {name}", seed)


# ---------------------------------------------------------------------------------------------- PostgreSQL
def source_url(url: str, table: str, id_column: str, column: str) -> str:
    """The table's URL for provenance: the password removed (from the user part and from a `password`
    parameter) and the table, key and column actually read."""
    from facebridge.migration.pg_table import TABLE_PARAMETERS
    from facebridge.pairs.backends import redact_dsn

    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':', 1)[0]}@{host}" if at else host
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in TABLE_PARAMETERS and k.lower() != "password"
    ]
    query += [("table", table), ("id", id_column), ("column", column)]
    clean = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, quote_via=quote), ""))
    return redact_dsn(clean)


def from_postgres(
    url: str,
    space: SpaceRef,
    max_size: int | None = None,
    seed: int = 0,
    id_column: str | None = None,
    column: str | None = None,
) -> Cohort:
    """A cohort of a PostgreSQL gallery's template column, named as `facebridge migrate` names it:
    `postgresql://user@host:port/db?table=T&id=KEY&column=C` (`--id` / `--column` override the URL).

    Why: the gallery the deployment scores against is its population, and it usually lives in the
    identity system's database; reading it in place spares an export of personal data. The column may
    be `real[]`, `double precision[]`, `bytea` (float32 little-endian) or pgvector's `vector`; each
    value is fetched in its binary send form and decoded by `pg_codec.decode_templates`, as the
    migration does. Rows are read in the key's order through a server-side cursor, in one read-only
    REPEATABLE READ transaction (both passes of a sample see the same snapshot); NULL, wrongly sized
    and non-finite values are skipped and counted. Nothing is written to the database.
    """
    try:
        import psycopg
        from psycopg import sql
    except ImportError as exc:
        raise CohortError("PostgreSQL sources need psycopg 3: pip install 'facebridge[postgres]'") from exc
    from facebridge.migration import pg_codec
    from facebridge.migration.pg_table import TableRef, inspect_table

    ref = TableRef.parse(url, id_column, column)
    source = source_url(url, ref.qualified, ref.id_column, ref.column)
    try:
        conn = psycopg.connect(ref.dsn)
    except psycopg.Error as exc:
        raise CohortError(f"cannot connect to {ref.where}: {_first_line(exc)}") from exc
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.cursor() as cursor:
            columns = inspect_table(cursor, ref)
        kind = columns.kind
        function = kind.send_function()
        value = sql.SQL("t.{}").format(sql.Identifier(ref.column))
        if function is not None:
            value = sql.SQL(function + "({})").format(value)
        query = sql.SQL("SELECT {value} FROM {table} t ORDER BY t.{key}").format(
            value=value, table=ref.identifier(), key=sql.Identifier(ref.id_column)
        )
        passes = 0

        def batches() -> Iterator[Batch]:
            nonlocal passes
            passes += 1
            with conn.cursor(name=f"facebridge_cohort_{passes}", binary=True) as cursor:
                cursor.itersize = BATCH_ROWS
                cursor.execute(query)
                while rows := cursor.fetchmany(BATCH_ROWS):
                    values = [None if r[0] is None else bytes(r[0]) for r in rows]
                    decoded = pg_codec.decode_templates(values, kind, space.dim)
                    skipped = Counter(_reason(why) for why in decoded.problems.values())
                    yield screen(decoded.matrix, len(values), skipped)

        gathered = gather(batches, space.dim, max_size, seed)
        conn.rollback()
    except psycopg.Error as exc:
        raise CohortError(f"{ref.qualified} in {ref.where}: {_first_line(exc)}") from exc
    finally:
        conn.close()
    extra = [f"column type {columns.source_type}"]
    return finish(gathered, space, "postgres", source, seed, extra=extra)


def _reason(problem: str) -> str:
    """pg_codec's reason for one value, as one of the note's categories."""
    if problem == "NULL":
        return NULL
    if problem.startswith("non-finite"):
        return NON_FINITE
    return WRONG_DIM


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------- pair store
def from_pair_store(
    where: str | Path, model: str, space: SpaceRef, max_size: int | None = None, seed: int = 0
) -> Cohort:
    """A cohort of every template of `model` recorded in the pair store (`POST /pairs`, `POST /embed`
    with `record`), on either side of any model pair.

    Why: a deployment that records pairs during a rollout already holds its own population's templates,
    made live by its own cameras; no photo or gallery export is needed. Only rows made by the space's
    weights (its sha256) are read: templates of other weights are another space. A capture recorded
    with several other models appears once per pair, so templates are deduplicated by their exact
    bytes, keeping the first. Order: model pairs by their ids, each oldest first.
    """
    from facebridge.pairs.backends import redact_dsn
    from facebridge.pairs.migrations import PairStoreError
    from facebridge.pairs.store import open_store

    text = str(where)
    remote = isinstance(where, str) and (
        text.startswith(("postgresql://", "postgres://")) or re.search(r"\b(host|dbname)=", text) is not None
    )
    source = redact_dsn(text) if remote else str(Path(text).expanduser().resolve())
    try:
        store = open_store(where)
    except (PairStoreError, OSError, ValueError) as exc:
        raise CohortError(f"pair store {source}: {_first_line(exc)}") from exc
    try:
        seen: set[bytes] = set()
        unique: list[np.ndarray] = []
        recorded = duplicates = other_weights = 0
        for stats in store.stats():
            if model not in (stats.source_model, stats.target_model):
                continue
            other = stats.target_model if stats.source_model == model else stats.source_model
            pairs = store.read(model, other, source_sha256=space.sha256)
            recorded += stats.pairs
            other_weights += stats.pairs - len(pairs)
            for vector in pairs.source:
                key = np.ascontiguousarray(vector, dtype="<f4").tobytes()
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                unique.append(vector)
    except PairStoreError as exc:
        raise CohortError(f"pair store {source}: {_first_line(exc)}") from exc
    finally:
        store.close()
    if not recorded:
        raise CohortError(f"pair store {source}: no pairs recorded with {model}")
    dims = {len(v) for v in unique}
    if dims - {space.dim}:
        raise CohortError(f"pair store {source}: {model} templates have dim {sorted(dims)}, not {space.dim}")
    matrix = np.stack(unique).astype(np.float32) if unique else np.empty((0, space.dim), np.float32)
    extra = []
    if other_weights:
        extra.append(f"{other_weights} templates made by other weights than {space.sha256[:12]}… left out")
    if duplicates:
        extra.append(f"{duplicates} duplicate templates (one capture, several model pairs) left out")
    batch = screen(matrix, recorded)
    gathered = gather(lambda: iter([batch]), space.dim, max_size, seed)
    return finish(gathered, space, "pair-store", source, seed, "recorded templates", extra)
