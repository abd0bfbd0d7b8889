"""What the trainers take, as plain dataclasses (no torch needed to build, check or print one).

The defaults are the shipped recipe: ``TeacherTrainingConfig(output=...)`` trains ``models/teacher`` as
``scripts/teacher.sh`` does, ``DistillConfig(output=..., scores=...)`` the student of ``scripts/student.sh``;
the CLI's defaults are read from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ranker.io import datasets
from ranker.io.datasets import DATA_DIR
from ranker.models.config import CrossEncoderConfig, TwinBertConfig

TEACHER_SETS = datasets.names("teacher")
"""Labelled sets the teacher trains on: DL20, DL21, DL23, dev600 and SciFact train."""
DISTILL_SETS = datasets.names("distill", defaults_only=True)
"""Sets whose candidates the student distils on by default: no labels needed (``msmarco-train`` only when
named: its BM25 run is made by ``scripts/student_v3.sh``)."""
SPARSE_SETS = tuple(n for n in datasets.names() if datasets.load(n).sparse)
"""Sets whose unjudged candidates are not negatives by default (one official positive per query)."""
SCIFACT_VAL_QUERIES = 50
"""SciFact train queries held out for validation when ``scifact-train`` is used."""


@dataclass(frozen=True)
class LoopConfig:
    """How long and how often.

    Attributes:
        max_steps: Last step (the learning rate decays linearly to 0 there).
        warmup_steps: Linear warm-up steps.
        max_minutes: Stop earlier once training (validation excluded) has run this long, across resumes.
        eval_every: Validate every this many steps (and at step 0 and the last step).
        checkpoint_every: Save ``checkpoint/`` every this many steps (and at the last step).
        seed: Seed of every step's draws (``seed * 1_000_003 + step``).
    """

    max_steps: int = 400
    warmup_steps: int = 20
    max_minutes: float | None = None
    eval_every: int = 50
    checkpoint_every: int = 50
    seed: int = 13

    def step_seed(self, step: int) -> int:
        return self.seed * 1_000_003 + step



@dataclass
class TeacherTrainingConfig:
    """What :func:`train_teacher` trains, on what, for how long.

    Attributes:
        output: Run folder: ``log.jsonl``, ``checkpoint/`` (last, for resuming), ``best/``, ``model/`` (fp16).
        init: Starting weights (folder or name); default: the bundled all-MiniLM-L6-v2.
        model: Architecture, for a plain-encoder start.
        loss: ``softmax`` (1 positive + ``group_size - 1`` negatives, cross-entropy on the positive) or
            ``listwise`` (up to half the group positives, target distribution proportional to ``2**grade - 1``).
        group_size: Passages per query per step.
        queries_per_step: Queries per step; each set in ``sets`` is drawn equally often.
        micro_batch: Pairs per forward pass within a step (grouped by length to save padding).
        lr: Encoder learning rate (AdamW, linear warm-up then linear decay to 0 at ``loop.max_steps``).
        head_lr: Learning rate of the ``span-cos`` scale and segment bias.
        loop: Steps, warm-up, time budget, validation and checkpoint cadence; its seed also seeds the
            validation split, sampling and dropout (each step's draws depend on seed and step only).
        data_dir: The shared data folder.
        sets: Labelled sets trained on.
        sparse: Sets whose unjudged candidates are not negatives (see :mod:`ranker.train.examples`).
        val_fraction: Share of DL20/DL21 queries held out for validation.
        scifact_val: SciFact train queries held out for validation (when ``scifact-train`` is in ``sets``).
        val_depth: Candidates reranked per validation query (BM25 top-k).
    """

    output: str
    init: str | None = None
    model: CrossEncoderConfig = field(default_factory=CrossEncoderConfig)
    loss: str = "softmax"
    group_size: int = 8
    queries_per_step: int = 4
    micro_batch: int = 8
    lr: float = 2e-5
    head_lr: float = 1e-2
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=400, warmup_steps=40, eval_every=100,
                                                                checkpoint_every=100))
    data_dir: str = str(DATA_DIR)
    sets: tuple[str, ...] = TEACHER_SETS
    sparse: tuple[str, ...] = SPARSE_SETS
    val_fraction: float = 0.25
    scifact_val: int = SCIFACT_VAL_QUERIES
    val_depth: int = 100



@dataclass
class DistillConfig:
    """What :func:`distill` trains, from which teacher scores, for how long.

    Attributes:
        output: Run folder (see :mod:`ranker.train.loop`); the final fp16 student is ``output/model``.
        scores: Folder of cached teacher scores (:func:`ranker.train.scores.score_with_teacher`).
        student: The student's architecture.
        doc_max_length: Passage tokens the student reads; ``None``: as ``student`` (or the ``init`` model) says.
        init: A TwinBERT folder to start from instead (e.g. the shipped student, to adapt it to one collection):
            its architecture is kept, only ``doc_max_length`` applies.
        sets: Distillation sets trained on (:data:`DISTILL_SETS`): their cached queries only. Validation covers
            the collections (MS MARCO, SciFact) of those queries.
        loss: ``margin-mse``, ``kl`` (listwise, at ``temperature``) or ``bce`` (the paper's soft cross-entropy).
        temperature: For ``kl`` and ``bce``.
        label_weight: Weight of a label term added to the distillation loss (0: none): for each group holding a
            labelled positive (grade >= 2 by :mod:`ranker.io.datasets`' mapping), cross-entropy of the student's
            softmax against gains ``2**grade - 1`` (unjudged passages gain 0).
        group_size: Candidates per query per step: half from the teacher's top ``top_pool``, half from the rest.
        top_pool: Teacher-ranked head that half of each group is drawn from.
        queries_per_step: Queries per step.
        lr: AdamW learning rate of the encoders; the pooling and crossing layers train at ``head_lr``.
        head_lr: Learning rate of pooling, projection and crossing.
        head_warmup_steps: The first steps train only pooling, projection and crossing, the encoders frozen
            (linear probing before fine-tuning): a crossing layer starting from random weights otherwise pulls
            the pretrained encoders with random gradients. Frozen steps cost about a third of a full step.
        loop: Steps, warm-up, time budget, validation and checkpoint cadence, seed.
        data_dir: The shared data folder; validation uses the teacher's held-out DL20/DL21 queries.
        val_fraction: As the teacher's (same seed, same queries).
        val_depth: BM25 candidates reranked per validation query.
        doc_stores: A frozen passage side: every training and validation passage's vector is read from these
            stores (of the student's document side) and only the query side trains (:mod:`ranker.train.frozen`);
            empty: passages are encoded and the towers train end to end.
        reset_crossing: With ``init``: a fresh crossing of ``student.crossing``'s kind (and its ``res_width``,
            ``cos_scale``) on the towers of ``init`` (e.g. the residual crossing on an aligned query tower).
        freeze_embeddings: Keep the query encoder's word embeddings as they start (e.g. student v3's, mpnet's own
            table, which its folder records by hash rather than carries).
    """

    output: str
    scores: str
    student: TwinBertConfig = field(default_factory=TwinBertConfig)
    doc_max_length: int | None = None
    init: str | None = None
    sets: tuple[str, ...] = DISTILL_SETS
    loss: str = "margin-mse"
    temperature: float = 1.0
    label_weight: float = 0.0
    group_size: int = 8
    top_pool: int = 10
    queries_per_step: int = 8
    lr: float = 5e-5
    head_lr: float = 1e-3
    head_warmup_steps: int = 0
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=120, eval_every=30, checkpoint_every=30))
    data_dir: str = str(DATA_DIR)
    val_fraction: float = 0.25
    val_depth: int = 50
    doc_stores: tuple[str, ...] = ()
    reset_crossing: bool = False
    freeze_embeddings: bool = False


@dataclass
class AlignConfig:
    """What :func:`ranker.train.align.align` trains: an asymmetric TwinBERT's query tower, to put short texts
    where its bi-encoder puts them. The defaults are student v2's alignment (``scripts/student_v2.sh``) but for
    the sets, which the script names (the MS MARCO ones).

    Attributes:
        output: Run folder (see :mod:`ranker.train.loop`); the final fp16 student is ``output/model``.
        doc_stores: Stores of the bi-encoder holding every validation candidate (validation reranks against them).
        doc_encoder: The bi-encoder (the passage side): ``mpnet`` or a folder.
        student: The query side's architecture (``doc_encoder``, ``proj_dim`` and ``doc_max_length`` are set
            from the bi-encoder).
        sets: Sets whose queries (minus the validation queries) and passages give the training texts.
        proj_dim: A query projection of this size even where the query encoder has the bi-encoder's width (e.g.
            768 over mpnet's own first layers: the ridge-fitted map of :func:`ranker.train.align.fit_projection`
            as the start); ``None``: a projection only where the widths differ.
        freeze_embeddings: Keep the query encoder's word embeddings as the checkpoint has them (mpnet's table is
            23M of a 1-layer tower's 30M parameters: its optimizer update was a quarter of each step).
        query_sets: Text-only sets (``align`` use, e.g. ``msmarco-train``) whose queries are training texts too.
        targets: Cache folder of the bi-encoder's target vectors (default ``output/targets``); runs may share one.
        sentences: Passage sentences drawn (seeded, spread evenly over the collections of ``sets``) besides the queries.
        batch_size: Texts per step.
        loss: ``mse`` (vector to vector) or ``cosine`` (direction alone; :mod:`ranker.train.align`).
        lr: AdamW learning rate of the query encoder; pooling and projection train at ``head_lr``.
        head_lr: Learning rate of pooling and projection.
        loop: Steps, warm-up, validation and checkpoint cadence, seed.
        data_dir: The shared data folder.
        val_fraction: As the teacher's (same seed, same validation queries).
        val_depth: BM25 candidates reranked per validation query.
    """

    output: str
    doc_stores: tuple[str, ...]
    doc_encoder: str = "mpnet"
    student: TwinBertConfig = field(default_factory=lambda: TwinBertConfig(query_max_length=64))
    sets: tuple[str, ...] = DISTILL_SETS
    proj_dim: int | None = None
    freeze_embeddings: bool = False
    query_sets: tuple[str, ...] = ()
    targets: str | None = None
    sentences: int = 12_000
    batch_size: int = 64
    loss: Literal["mse", "cosine"] = "mse"
    lr: float = 1e-4
    head_lr: float = 1e-3
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=600, warmup_steps=50, eval_every=150,
                                                                checkpoint_every=150))
    data_dir: str = str(DATA_DIR)
    val_fraction: float = 0.25
    val_depth: int = 50
