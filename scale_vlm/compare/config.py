"""The comparison's config (one for the whole run: ``--config x.yaml`` or flags), its arms, and the parts of the
config each stage depends on."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..knobs import BENCH_KNOBS, SCHEDULE_KNOBS, BenchKnobs, ScheduleKnobs, apply_quick

ARMS = ("sft", "scale", "sft_grpo", "scale_grpo")
ARM_LABELS = {"sft": "vanilla SFT", "scale": "SCALe-SFT", "sft_grpo": "vanilla SFT -> GRPO",
              "scale_grpo": "SCALe-SFT -> GRPO"}
ARM_SFT = {"sft": "vanilla", "scale": "scale", "sft_grpo": "vanilla", "scale_grpo": "scale"}
REFERENCE_ARM = "sft_grpo"  # "time relative to SFT+GRPO"
GRPO_PROMPTS = ("held_out", "sft_rows")
# Settings that records kept before a field existed ran with: such a record stands for those values.
RECORD_SETTINGS_BEFORE = {"grpo": {"grpo_prompts": "sft_rows", "grpo_probe_every": 0, "grpo_probe_size": 100}}
RESULT_FILES = ("results.json", "results.md", "accuracy_vs_time.png")
# --quick: a smoke run of the four arms in a few minutes (sets only options left at their defaults).
QUICK = {"num_train": 64, "num_grpo_prompts": 16, "num_test": 20, "sft_steps": 6, "sft_batch_size": 8,
         "grpo_steps": 2, "grpo_batch_size": 8, "num_generations": 4, "max_completion_length": 48, "max_new_tokens": 64}


@dataclass
class CompareConfig(BenchKnobs, ScheduleKnobs):
    """One config for the whole comparison (``--config x.yaml`` or flags). Defaults: the embedded default
    (tiny base VLM, built-in benchmark); the SFT stage sees as many examples as the earlier 240-step demo
    (120 x 32, a fifth of today's demo), so the four arms fit about 13 minutes per seed. See docs/compare.md for
    measured times."""

    output_dir: str = field(default="runs/compare", metadata={"help": "results folder (stages are kept inside)"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "seeds: data, order, init, sampling"})
    quick: bool = field(default=False, metadata={
        "help": "smoke test: tiny data and step budgets (a few minutes); sets only the options you leave at their "
                "defaults"})
    base_model: str = field(default="", metadata={"help": "base model folder (default: the shipped tiny base)"})
    # the user's data instead of the built-in benchmark: the options of scale-vlm sft and eval
    dataset_name: str = field(default="", metadata={
        "help": "your data (a file or folder scale-vlm sft reads, with a train and a test split); default: the "
                "built-in benchmark. --num_train / --num_test take the first rows of the splits, --num_grpo_prompts "
                "the rows --grpo_prompts names"})
    dataset_train_split: str = field(default="train", metadata={"help": "split for SFT and the GRPO prompts"})
    dataset_test_split: str = field(default="test", metadata={"help": "split to evaluate the four arms on"})
    adapter: str = field(default="auto", metadata={
        "help": "schema of the test split and GRPO prompts, as in scale-vlm eval (auto: an SFT data file is read "
                "with 'sft', its prompts as written)"})
    image_column: str | None = field(default="image", metadata={"help": "generic adapter: image column"})
    question_column: str = field(default="question", metadata={"help": "generic adapter: question column"})
    answer_column: str = field(default="answer", metadata={"help": "generic adapter: answer column"})
    choices_column: str | None = field(default=None, metadata={
        "help": "generic adapter: choices column (default: 'choices' when present)"})
    answer_format: str = field(default="auto", metadata={"help": "with choices: index, text or auto"})
    # data (built-in benchmark)
    num_train: int = field(default=3000, metadata={"help": "SFT training questions (with reasoning traces)"})
    num_grpo_prompts: int = field(default=256, metadata={"help": "GRPO prompts (see --grpo_prompts)"})
    grpo_prompts: str = field(default="held_out", metadata={
        "help": "where the GRPO prompts come from: held_out (questions SFT did not train on, as RL data is in "
                "cold-start pipelines: the built-in benchmark's own stream of GRPO questions; with --dataset_name, "
                "the rows of --dataset_train_split after the first --num_train) or sft_rows (the first "
                "--num_grpo_prompts SFT training questions)"})
    num_test: int = field(default=100, metadata={"help": "held-out evaluation questions"})
    # SFT (both methods share everything but the loss)
    sft_steps: int = field(default=120, metadata={"help": "SFT optimizer steps"})
    sft_batch_size: int = field(default=32, metadata={"help": "SFT examples per optimizer step"})
    sft_learning_rate: float = field(default=2e-3, metadata={"help": "SFT peak learning rate (cosine, 5 percent warm-up)"})
    # GRPO (both GRPO arms share everything but their starting checkpoint)
    grpo_steps: int = field(default=24, metadata={"help": "GRPO optimizer steps"})
    grpo_batch_size: int = field(default=16, metadata={"help": "completions per GRPO step"})
    num_generations: int = field(default=4, metadata={"help": "completions per prompt (group size)"})
    max_completion_length: int = field(default=160, metadata={"help": "GRPO generation budget (tokens)"})
    grpo_learning_rate: float = field(default=1e-4, metadata={"help": "GRPO learning rate (constant)"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient (0: no reference model)"})
    loss_type: str = field(default="dapo", metadata={"help": "TRL GRPO loss: grpo, dr_grpo, dapo, bnpo, ..."})
    temperature: float = field(default=1.0, metadata={"help": "GRPO sampling temperature"})
    accuracy_weight: float = field(default=1.0, metadata={"help": "weight of the accuracy reward"})
    format_weight: float = field(default=0.5, metadata={"help": "weight of the format reward"})
    grpo_probe_every: int = field(default=0, metadata={
        "help": "greedy accuracy of each GRPO policy on the first --grpo_probe_size test questions before GRPO and "
                "every N steps (the scored answer, which the sampled reward need not follow; monitoring only, its "
                "time kept out of the arms' training time; 0 = off)"})
    grpo_probe_size: int = field(default=100, metadata={"help": "questions of the greedy probe (--grpo_probe_every)"})
    # evaluation
    eval_batch_size: int = field(default=50, metadata={"help": "questions generated together"})
    max_new_tokens: int = field(default=200, metadata={"help": "evaluation generation budget"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for the tiny model)"})
    save_steps: int = field(default=50, metadata={
        "help": "checkpoint every N optimizer steps of an SFT or GRPO stage (the last one kept), so that a rerun of "
                "an interrupted comparison resumes that stage from there, its time and token counts carried on; "
                "0 = no checkpoints (an interrupted stage starts again from step 0). Results do not depend on it"})
    records_dir: str = field(default="", metadata={
        "help": "also keep each finished seed's record here (small JSON, no models: one to commit) and take it from "
                "there on a later run with the same settings instead of running that seed again, so that a "
                "comparison can be run a few seeds at a time, in several processes or sessions"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self):
        if isinstance(self.seeds, (int, str)):
            self.seeds = [int(s) for s in str(self.seeds).replace(",", " ").split()]
        self.seeds = [int(s) for s in self.seeds]
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        # --quick sets only what the user left at its default, and says so (run_compare); an explicit value is kept,
        # so the checks below see the values the run will use.
        self.quick_settings: dict[str, int] = apply_quick(self, QUICK) if self.quick else {}

        def shown(name: str) -> str:
            return f"--{name} {getattr(self, name)}" + (" (set by --quick)" if name in self.quick_settings else "")

        if self.grpo_batch_size % self.num_generations:
            fit = max(1, round(self.grpo_batch_size / self.num_generations)) * self.num_generations
            raise ValueError(f"{shown('grpo_batch_size')} must be a multiple of {shown('num_generations')}: pass "
                             f"e.g. --grpo_batch_size {fit}")
        if self.grpo_prompts not in GRPO_PROMPTS:
            raise ValueError(f"--grpo_prompts {self.grpo_prompts!r}: choose one of {', '.join(GRPO_PROMPTS)}")
        if self.grpo_prompts == "sft_rows" and self.num_grpo_prompts > self.num_train:
            raise ValueError(f"{shown('num_grpo_prompts')} cannot exceed {shown('num_train')} with --grpo_prompts "
                             "sft_rows (GRPO prompts are then SFT training questions): pass a smaller "
                             "--num_grpo_prompts or a larger --num_train")
        if self.save_steps < 0:
            raise ValueError(f"--save_steps {self.save_steps}: give a positive interval, or 0 for no checkpoints")
        if self.grpo_probe_every < 0 or (self.grpo_probe_every and self.grpo_probe_size < 1):
            raise ValueError(f"--grpo_probe_every {self.grpo_probe_every} --grpo_probe_size {self.grpo_probe_size}: "
                             "give a positive interval and at least one question, or --grpo_probe_every 0")

    def columns(self):
        from ..eval.adapters import ColumnMapping

        mapping = ColumnMapping(image_column=self.image_column or None, question_column=self.question_column,
                                answer_column=self.answer_column, choices_column=self.choices_column)
        return None if mapping == ColumnMapping() and self.adapter != "columns" else mapping

    def user_data_fields(self) -> dict:
        """The user's data as the stage hashes see it: the options and the files' sizes and times, so an edited
        data file is trained on again."""
        import os

        if not self.dataset_name:
            return {}
        stamp = []
        for root, _, files in os.walk(self.dataset_name) if os.path.isdir(self.dataset_name) else \
                [(os.path.dirname(self.dataset_name), None, [os.path.basename(self.dataset_name)])]:
            for name in sorted(files):
                path = os.path.join(root, name)
                if os.path.isfile(path):
                    st = os.stat(path)
                    stamp.append((path, st.st_size, int(st.st_mtime)))
        return {k: getattr(self, k) for k in ("dataset_name", "dataset_train_split", "dataset_test_split", "adapter",
                                              "image_column", "question_column", "answer_column", "choices_column",
                                              "answer_format")} | {"files": sorted(stamp)}

    def record_settings(self) -> dict:
        """What a kept seed record must have been run with to stand in this comparison: every stage's fields."""
        return {"data": self.data_fields(), "sft": self.sft_fields(), "grpo": self.grpo_fields(),
                "eval": self.eval_fields(), "base_model": self.base_model}

    # The parts of the config each stage depends on (its hash), so that e.g. changing GRPO knobs reuses SFT.
    def data_fields(self) -> dict:
        if self.dataset_name:
            return {"num_train": self.num_train, **self.user_data_fields()}
        return {k: getattr(self, k) for k in ("num_train", *BENCH_KNOBS)}

    def sft_fields(self) -> dict:
        return {k: getattr(self, k) for k in ("sft_steps", "sft_batch_size", "sft_learning_rate", *SCHEDULE_KNOBS)}

    def grpo_fields(self) -> dict:
        return {k: getattr(self, k) for k in ("num_grpo_prompts", "grpo_prompts", "grpo_steps", "grpo_batch_size",
                                              "num_generations", "max_completion_length", "grpo_learning_rate", "beta",
                                              "loss_type", "temperature", "accuracy_weight", "format_weight",
                                              "grpo_probe_every", "grpo_probe_size")}

    def eval_fields(self) -> dict:
        if self.dataset_name:
            return {"num_test": self.num_test, "max_new_tokens": self.max_new_tokens, **self.user_data_fields()}
        return {k: getattr(self, k) for k in ("num_test", "max_new_tokens", *BENCH_KNOBS)}
