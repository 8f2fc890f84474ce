"""Peak memory of the stages that hold the whole sample on this machine, as it grows: what the cost estimate checks
against the machine's free memory before any work, so a sample too large fails at once with the setting to change
instead of hours later. trained_model is not among them: its peak is one training step's, set by the batch, the pool
and the sequence length whatever the sample (trained_model attention_dropout 0 and gradient_checkpointing lower it);
for the dense step shape, whose peak was measured per base model, it is a warning. Pure logic: nothing here imports Dagster."""
from __future__ import annotations

from dataclasses import dataclass

from finetune_assets.core.offline_models import BGE_SMALL_MODEL, MINILM_MODEL


@dataclass(frozen=True)
class StageMemory:
    stage: str
    fixed_mib: float  # models, libraries and blocks of bounded size: what the stage takes whatever the sample
    per_thousand_documents_mib: float  # what each 1,000 sampled documents add (vectors, texts, the BM25 index)

    def peak_mib(self, documents: int) -> float:
        return self.fixed_mib + self.per_thousand_documents_mib * documents / 1000


# From benchmarks/scaling.py's peak RSS at 2,000, 8,000 and 32,000 sampled wiki-paragraphs (paragraph-sized
# documents, dense default, encoders releasing freed memory): mined_negatives 1,181, 1,344 and 2,738 MiB,
# evaluation_report 1,406, 1,509 and 2,178 MiB (benchmarks/results/scaling-2026-12-05/). Each line has the slope
# between 8,000 and 32,000 documents, the steeper one, raised to lie above all three points, and rounded up. At
# 100,000 documents both stayed far under their lines: 2,691 and 2,819 MiB (stages-100k.json). With the four-signal
# teacher (bge-small-en through onnxruntime beside SPLADE-tiny) mined_negatives peaked at 1,670 and 2,097 MiB at
# 2,000 and 8,000 documents (mined-negatives-four-signals.json), so its line now has that steeper slope and lies
# above those points too. bge-small-en as the base model took 1,475 and 1,493 MiB at 2,000 documents
# (benchmarks/results/bge-small-base-2026-12-06/scaling-bge-small-2000.json): evaluation_report holds the base and the
# tuned model, 87 MiB more than with MiniLM, so its fixed part is raised by 100; the slope stays, both models
# writing 384-dimension vectors.
STAGES = (
    StageMemory("mined_negatives", 1550, 71),
    StageMemory("evaluation_report", 1450, 28),
)
HEADROOM = 0.9  # of the free memory a run may plan to use: the rest is for the system and page cache

# trained_model's peak is one training step's whatever the sample, measured for dense batch_kl steps of 32 queries at
# most 256 tokens on wiki-paragraphs, per base model and by (candidates per query, gradient_checkpointing, attention
# dropout 0). all-MiniLM-L6-v2 with 4 candidates, from benchmarks/results/scaling-2026-12-05/: BERT's own attention
# dropout at 32,000 documents (stages-32k.json) and with checkpointing at 100,000 (stages-100k.json); attention
# dropout 0 at 100,000 (trained-model-default-100k.json: 335 MiB above its 32,000 figure, the sample's documents the
# process holds) and with checkpointing at 32,000 (trained-model-attention-dropout0-checkpointing-32k.json).
# bge-small-en (twelve layers to MiniLM's six) with its default attention dropout 0 at 2,000 documents: 4 candidates
# (benchmarks/results/bge-small-base-2026-12-06/scaling-bge-small-2000.json, bf16 training on AVX-512 BF16) and 2
# candidates (benchmarks/results/dense-2-candidates-2026-12-07/scaling-2-candidates-2000.json, fp32 training on a CPU
# without AVX-512). Shorter documents take less, so it warns and never refuses; a setting not measured for the base
# model gets no warning.
STEP_QUERIES, STEP_TOKENS = 32, 256
STEP_MIB = {
    MINILM_MODEL.lower(): {(4, False, False): 9805, (4, True, False): 3540, (4, False, True): 5693,
                           (4, True, True): 3194},
    BGE_SMALL_MODEL.lower(): {(4, False, True): 8215, (2, False, True): 7222},
}


def training_step_warning(base_model: str, candidates: int, checkpointing: bool, attention_dropout_off: bool,
                          available_mib: float) -> str | None:
    """What to set when the measured dense training step would not fit the free memory; None if it fits or was
    not measured for this base model, candidates per query and these settings."""
    step = STEP_MIB.get(base_model.strip().lower(), {})
    peak = step.get((candidates, checkpointing, attention_dropout_off))
    budget = HEADROOM * available_mib
    if peak is None or peak <= budget:
        return None

    def fits(setting: tuple[int, bool, bool]) -> bool:
        return setting in step and step[setting] <= budget

    options = []
    if not attention_dropout_off and fits((candidates, checkpointing, True)):
        options.append(f"trained_model attention_dropout: 0 (about "
                       f"{step[(candidates, checkpointing, True)] / 1024:.1f} GiB and faster, a slightly different "
                       "model)")
    if not checkpointing and fits((candidates, True, attention_dropout_off)):
        options.append(f"trained_model gradient_checkpointing: true (about "
                       f"{step[(candidates, True, attention_dropout_off)] / 1024:.1f} GiB, the same model in about "
                       "twice the training time)")
    if not options and not (checkpointing and attention_dropout_off) and fits((candidates, True, True)):
        options.append(f"trained_model attention_dropout: 0 and gradient_checkpointing: true (about "
                       f"{step[(candidates, True, True)] / 1024:.1f} GiB)")
    if not options:  # the same model and settings cannot fit: a smaller pool, or the lighter model
        fewer = sorted(c for c, *setting in step if c < candidates and fits((c, *setting))
                       and tuple(setting) == (checkpointing, attention_dropout_off))
        if fewer:
            options.append(f"trained_model candidates_per_query: {fewer[-1]} (about "
                           f"{step[(fewer[-1], checkpointing, attention_dropout_off)] / 1024:.1f} GiB, a smaller "
                           "pool per step)")
        # A step with fewer candidates than the lighter model's measured one takes less: its figure bounds it.
        lighter = min((mib for (c, *setting), mib in STEP_MIB[MINILM_MODEL.lower()].items()
                       if c >= candidates and tuple(setting) == (checkpointing, attention_dropout_off)), default=None)
        if base_model.strip().lower() != MINILM_MODEL.lower() and lighter is not None and lighter <= budget:
            options.append(f"base_model {MINILM_MODEL} (at most about {lighter / 1024:.1f} GiB, a weaker model "
                           "that trains in half the time)")
    advice = ("set " + " or ".join(options) if options
              else "lower trained_model max_seq_length or batch_size, or use a larger machine")
    return (f"trained_model's training step of {base_model} took about {peak / 1024:.1f} GiB with these settings on "
            f"paragraph-long documents (less on shorter ones) and this machine has {available_mib / 1024:.1f} GiB "
            f"free: {advice}")


@dataclass(frozen=True)
class MemoryEstimate:
    documents: int
    stage: str  # the stage with the highest peak
    peak_mib: float
    available_mib: float
    stages: tuple[StageMemory, ...] = STAGES

    @property
    def fits(self) -> bool:
        return self.peak_mib <= HEADROOM * self.available_mib

    def largest_sample(self) -> int:
        """The most sampled documents whose peak fits the free memory (0 when not even the fixed part fits)."""
        budget = HEADROOM * self.available_mib
        return max(0, min(int((budget - s.fixed_mib) / s.per_thousand_documents_mib * 1000) for s in self.stages))

    def refusal(self) -> str | None:
        """Why this sample would not fit, naming the setting to change; None when it fits."""
        if self.fits:
            return None
        largest = self.largest_sample()
        what = (f"lower raw_corpus max_documents to {largest:,} or less" if largest
                else "free memory or use a larger machine: even a small sample would not fit")
        return (f"a sample of {self.documents:,} documents would need about {self.peak_mib / 1024:.1f} GiB at its "
                f"peak ({self.stage}) but this machine has {self.available_mib / 1024:.1f} GiB free: {what} "
                "(measured per 1,000 documents by benchmarks/scaling.py)")


def estimate_memory(documents: int, available_mib: float, *, stages: tuple[StageMemory, ...] = STAGES
                    ) -> MemoryEstimate:
    """The highest peak over the stages that hold the sample."""
    if documents < 0 or available_mib <= 0:
        raise ValueError(f"documents must be >= 0 and available memory > 0, got {documents} and {available_mib}")
    top = max(stages, key=lambda s: s.peak_mib(documents))
    return MemoryEstimate(documents, top.stage, top.peak_mib(documents), available_mib, stages)


def free_memory_mib() -> float:
    """Memory this machine can give a run now (psutil's available: free plus reclaimable cache)."""
    import psutil

    return psutil.virtual_memory().available / 2**20
