"""Local stand-ins for the six benchmarks' hub datasets: the same ids, configs, splits, column names and types (see
`trl_nft.math_recipe.benchmarks`), made-up or copied rows. `FakeHub` replaces `datasets.load_dataset` for them."""

from __future__ import annotations

from trl_nft.math_recipe.benchmarks import BENCHMARKS


def hub_shaped(name: str, problems: list[str], answers: list[str]):
    """A `datasets.Dataset` with the columns and types the hub dataset of benchmark `name` has, holding these
    problems (without the paper's instruction, as on the hub) and answers (written the hub's way)."""
    from datasets import Dataset, Features, Sequence, Value

    count = len(problems)
    text, blank = Value("string"), [""] * count
    if name == "aime24":  # HuggingFaceH4/aime_2024: answers are 3-digit strings ("025")
        columns = {"id": list(range(count)), "problem": problems, "solution": blank,
                   "answer": [f"{int(a):03d}" for a in answers], "url": blank, "year": ["2024"] * count}
        types = {"id": Value("int64"), "problem": text, "solution": text, "answer": text, "url": text, "year": text}
    elif name == "math500":  # HuggingFaceH4/MATH-500: `solution` is the worked solution, `answer` the target
        columns = {"problem": problems, "solution": [f"... so $\\boxed{{{a}}}$. Wrong: \\boxed{{0}}" for a in answers],
                   "answer": answers, "subject": blank, "level": [1] * count, "unique_id": blank}
        types = {"problem": text, "solution": text, "answer": text, "subject": text, "level": Value("int64"),
                 "unique_id": text}
    elif name == "aime25":  # math-ai/aime25
        columns = {"problem": problems, "answer": answers, "id": [str(i) for i in range(count)]}
        types = {"problem": text, "answer": text, "id": text}
    elif name == "amc23":  # math-ai/amc23: `question`, and numeric answers (27.0)
        columns = {"id": list(range(count)), "question": problems, "answer": [float(a) for a in answers],
                   "url": blank}
        types = {"id": Value("int64"), "question": text, "answer": Value("float64"), "url": text}
    elif name == "olympiadbench":  # Hothan/OlympiadBench OE_TO_maths_en_COMP: `final_answer` is a list
        columns = {"id": list(range(count)), "question": problems, "solution": [[""]] * count,
                   "final_answer": [[a] for a in answers], "context": [None] * count, "image_1": [None] * count,
                   "is_multiple_answer": [False] * count, "unit": [None] * count, "answer_type": blank,
                   "subfield": blank, "language": ["English"] * count}
        types = {"id": Value("int64"), "question": text, "solution": Sequence(text),
                 "final_answer": Sequence(text), "context": text, "image_1": text,
                 "is_multiple_answer": Value("bool"), "unit": text, "answer_type": text, "subfield": text,
                 "language": text}
    else:  # minerva_math, math-ai/minervamath
        columns, types = {"question": problems, "answer": answers}, {"question": text, "answer": text}
    return Dataset.from_dict(columns, features=Features(types))


def synthetic(name: str, count: int | None = None):
    """Hub-shaped rows with made-up problems; integer answers for AIME/AMC, LaTeX for the others."""
    count = BENCHMARKS[name].num_problems if count is None else count
    problems = [f"{name} problem {i}: find $x$ if $x - {i} = {i}$." for i in range(count)]
    integer = BENCHMARKS[name].integer_answers
    answers = [str(2 * i) if integer else f"\\frac{{{i}}}{{2}}" for i in range(count)]
    return hub_shaped(name, problems, answers)


class FakeHub:
    """Stands in for `datasets.load_dataset`: serves a fixture only at its benchmark's hub id, config and split (local
    files, given by `data_files`, still load for real)."""

    def __init__(self, tables: dict):
        import datasets

        self.real_load_dataset = datasets.load_dataset
        self.tables = {(BENCHMARKS[name].hub_id, BENCHMARKS[name].hub_config, BENCHMARKS[name].hub_split): table
                       for name, table in tables.items()}
        self.calls = []

    def __call__(self, path, name=None, split=None, **kwargs):
        if kwargs.get("data_files") is not None:
            return self.real_load_dataset(path, name, split=split, **kwargs)
        self.calls.append((path, name, split))
        if (path, name, split) not in self.tables:
            raise FileNotFoundError(f"no hub dataset {path} (config {name}, split {split}) in this fake hub")
        return self.tables[(path, name, split)]
