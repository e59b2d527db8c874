"""Plain-text tables of retrieval metrics, for the terminal."""

from __future__ import annotations

DIRECTIONS = (("text_to_image", "text→image"), ("image_to_text", "image→text"))


def format_table(columns: dict[str, dict], primary: str = "turkish",
                 extra: tuple[tuple[str, str], ...] = (("english", "english"),)) -> str:
    """One row per (caption set, direction), one block of R@1/R@5/R@10/median rank per column (model).

    `columns` maps a label ("base", "adapter", "before", ...) to metrics as `evaluate` returns them; each
    (key, label) of `extra` whose key all of them have nested (English captions, a benchmark's every caption)
    becomes extra rows under that label.
    """
    langs = [(primary, lambda m: m)]
    for key, label in extra:
        if all(key in m for m in columns.values()):
            langs.append((label, lambda m, key=key: m[key]))
    width = max(9, *(len(label) + 1 for label, _ in langs))
    head = f"{'':<{width}}{'':<12}" + "".join(f"| {label:^30}" for label in columns)
    sub = f"{'captions':<{width}}{'direction':<12}" + "| R@1    R@5    R@10   medR   " * len(columns)
    lines = [head, sub, "-" * len(sub)]
    for lang, pick in langs:
        for key, name in DIRECTIONS:
            row = f"{lang:<{width}}{name:<12}"
            for metrics in columns.values():
                m = pick(metrics)[key]
                row += f"| {m['R@1']:<6.2f} {m['R@5']:<6.2f} {m['R@10']:<6.2f} {m['median_rank']:<6.1f} "
            lines.append(row)
    counts = [f"{pick(next(iter(columns.values())))['n_texts']} {lang}" for lang, pick in langs]
    n_images = next(iter(columns.values()))["n_images"]
    lines.append(f"({n_images} images, {' + '.join(counts)} captions; R@k in %, medR = median rank)")
    return "\n".join(lines)
