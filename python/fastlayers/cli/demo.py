"""`python -m fastlayers demo`, the main job.

1. Every op against torch on each available device (the check table).
2. The three seed models (fastlayers.models) trained on scikit-learn's handwritten digits
   (8x8 images, no download): the CNN on the images, the RNN on their rows as a sequence, the
   Transformer on the rows as tokens. Each is trained twice from the same seed, with
   fastlayers layers and with its torch.nn twin; test accuracy and time per epoch side by
   side.
3. Each trained fastlayers model quantized (fastlayers.quantize: Linear -> Int8Linear):
   accuracy and inference time before and after.
4. Explanations of a few test digits: saliency and integrated gradients for each model, the
   Transformer's attention, as PNG pictures.
5. The quick benchmark of every op at realistic sizes (on inputs as small as the digits, time
   per epoch mostly measures Python overhead).
Everything goes to the output folder (summary.json, summary.md, the PNGs); the last line
says where.
"""

import copy
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from fastlayers.cli import bench, check, info


class DemoError(Exception):
    """A problem with the user's arguments or environment: reported as one line."""


def _banner(title):
    print(f"\n=== {title} " + "=" * max(0, 72 - len(title)), flush=True)


def _digits(device):
    """(x_train, y_train, x_test, y_test): the 1797 digits scaled to [0, 1], a fixed 80/20
    split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DemoError("the demo needs scikit-learn (pip install scikit-learn)") from e
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm].to(device), y[perm].to(device)
    n = int(0.8 * len(y))
    return x[:n], y[:n], x[n:], y[n:]


# name -> (constructor, input view: images [N, 1, 8, 8] or rows [N, 8, 8])
def _model_specs():
    from fastlayers import models

    return {
        "CNN": (models.CNN, lambda x: x.unsqueeze(1)),
        "RNN": (models.RNNClassifier, lambda x: x),
        "Transformer": (models.TransformerEncoder, lambda x: x),
    }


def _accuracy(model, x, y, batch=512):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += (model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum().item()
    return 100.0 * correct / len(y)


def _train(model, x, y, epochs, seed, label, progress):
    """Adam with a cosine-annealed learning rate, batches of 64, the data order from `seed`;
    returns the seconds of each epoch. The annealing matters for the side-by-side: at a
    constant rate the test accuracy swings by several points from epoch to epoch, so two
    runs that differ only in float rounding would end points apart by chance."""
    from tqdm.auto import tqdm

    batch = 64
    steps = (len(y) + batch - 1) // batch
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps)
    g = torch.Generator().manual_seed(seed)
    times = []
    bar = tqdm(total=epochs * steps, desc=label, leave=False, disable=not progress, unit="step")
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=g).to(y.device)
        t0 = time.perf_counter()
        for i in range(steps):
            idx = order[i * batch : (i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
            bar.update(1)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    bar.close()
    return times


def _inference_ms(model, x, reps=5):
    model.eval()
    ts = []
    with torch.no_grad():
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts[1:])


def _explain_pictures(name, model, view, x, y, out):
    """Saliency and integrated gradients of the predicted class for the first 6 test digits
    (one PNG each, a row per digit), and the Transformer's attention rollout."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from fastlayers import explain

    model.eval()
    images = x[:6]
    inputs = view(images)
    with torch.no_grad():
        pred = model(inputs).argmax(-1)
    maps = {
        "saliency": explain.saliency(model, inputs, pred),
        "integrated gradients": explain.integrated_gradients(model, inputs, pred, n_steps=32),
    }
    files = []
    for method, attr in maps.items():
        attr = attr.reshape(len(images), 8, 8).detach().cpu()
        fig = Figure(figsize=(2.2 * len(images), 2.6), layout="constrained")
        axes = fig.subplots(1, len(images))
        for i, ax in enumerate(axes):
            ax.imshow(images[i].cpu(), cmap="gray_r", interpolation="nearest")
            a = attr[i].abs() if method == "saliency" else attr[i]
            lim = float(a.abs().max()) or 1.0
            ax.imshow(
                a,
                cmap="Reds" if method == "saliency" else "bwr",
                alpha=0.55,
                vmin=0 if method == "saliency" else -lim,
                vmax=lim,
                interpolation="nearest",
            )
            ax.set_title(f"label {int(y[i])}, pred {int(pred[i])}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{name}: {method} of the predicted class over the digit")
        path = os.path.join(out, f"{name.lower()}_{method.replace(' ', '_')}.png")
        fig.savefig(path, dpi=110)
        files.append(path)
    if name == "Transformer":
        att = explain.attention_maps(model, inputs)
        roll = explain.attention_rollout(att).cpu()
        fig = Figure(figsize=(2.2 * len(images), 4.6), layout="constrained")
        axes = fig.subplots(2, len(images))
        for i in range(len(images)):
            axes[0, i].imshow(images[i].cpu(), cmap="gray_r", interpolation="nearest")
            axes[0, i].set_title(f"label {int(y[i])}", fontsize=9)
            axes[1, i].imshow(roll[i], cmap="viridis", interpolation="nearest")
            axes[1, i].set_xlabel("key row", fontsize=8)
            axes[1, i].set_ylabel("query row", fontsize=8)
            for ax in axes[:, i]:
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle("Transformer: attention rollout between image rows (tokens)")
        path = os.path.join(out, "transformer_attention.png")
        fig.savefig(path, dpi=110)
        files.append(path)
    return files


def _markdown(summary):
    lines = ["# fastlayers demo", ""]
    lines.append(f"device: {summary['device']}, epochs: {summary['epochs']}, wall time: {summary['wall_s']:.0f} s")
    lines.append("")
    c = summary["check"]
    lines.append(f"## check: {c['passed']} passed, {c['failed']} failed")
    lines.append("")
    lines.append("## Training on the digits (fastlayers vs its torch.nn twin, same seed)")
    lines.append("")
    lines.append("| model | fastlayers acc % | torch acc % | fastlayers s/epoch | torch s/epoch |")
    lines.append("|---|---|---|---|---|")
    for name, m in summary["models"].items():
        lines.append(
            f"| {name} | {m['fastlayers_accuracy']:.1f} | {m['torch_accuracy']:.1f} | "
            f"{m['fastlayers_s_per_epoch']:.3f} | {m['torch_s_per_epoch']:.3f} |"
        )
    lines.append("")
    lines.append("## Quantized (fastlayers.quantize: Linear -> Int8Linear)")
    lines.append("")
    lines.append("| model | acc % before | acc % after | test-set inference ms before | after |")
    lines.append("|---|---|---|---|---|")
    for name, m in summary["models"].items():
        q = m["quantized"]
        lines.append(
            f"| {name} | {m['fastlayers_accuracy']:.1f} | {q['accuracy']:.1f} | "
            f"{q['inference_ms_before']:.2f} | {q['inference_ms_after']:.2f} |"
        )
    lines.append("")
    lines.append("## Quick benchmark (torch time / fastlayers time; > 1 is faster)")
    lines.append("")
    lines.append("| op | mode | config | dtype | layout | fastlayers ms | torch ms | ratio |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in summary["bench"]:
        lines.append(
            f"| {r['op']} | {r['mode']} | {r['config']} | {r['dtype']} | {r['layout']} | "
            f"{r['fl_ms']:.4g} | {r['torch_ms']:.4g} | {r['ratio']:.2f} |"
        )
    lines.append("")
    lines.append("## Pictures")
    lines.append("")
    lines += [f"- ![{os.path.basename(p)}]({os.path.basename(p)})" for p in summary["pictures"]]
    return "\n".join(lines) + "\n"


def run(device=None, epochs=None, quick=False, out="demo-output", progress=True) -> int:
    try:
        return _run(device, epochs, quick, out, progress)
    except DemoError as e:
        print(f"fastlayers demo: {e}")
        return 2


def _run(device, epochs, quick, out, progress) -> int:
    import fastlayers

    if device == "cuda" and not torch.cuda.is_available():
        raise DemoError("--device cuda: no CUDA GPU is available on this machine")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if epochs is not None and epochs < 1:
        raise DemoError(f"--epochs must be at least 1, got {epochs}")
    epochs = epochs or (3 if quick else 12)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise DemoError(f"--out {out}: {e.strerror}") from e
    start = time.perf_counter()

    _banner("fastlayers info")
    info.run()
    _banner("fastlayers check: every op against torch")
    rows = check.collect()
    failed = check.print_rows(rows)

    _banner(f"training the seed models on the digits ({epochs} epochs, {device})")
    xtr, ytr, xte, yte = _digits(device)
    results, pictures = {}, []
    for name, (cls, view) in _model_specs().items():
        torch.manual_seed(0)
        ours = cls().to(device)
        twin = ours.torch_reference()
        t_ours = _train(ours, view(xtr), ytr, epochs, 1, f"{name} fastlayers", progress)
        t_twin = _train(twin, view(xtr), ytr, epochs, 1, f"{name} torch", progress)
        acc, acc_twin = _accuracy(ours, view(xte), yte), _accuracy(twin, view(xte), yte)
        # The first epoch includes one-time set-up; the mean is over the rest when there are.
        per_epoch = statistics.mean(t_ours[1:] or t_ours)
        per_epoch_twin = statistics.mean(t_twin[1:] or t_twin)
        print(
            f"{name:12s} test accuracy: fastlayers {acc:5.1f}%  torch {acc_twin:5.1f}%   "
            f"s/epoch: fastlayers {per_epoch:.3f}  torch {per_epoch_twin:.3f}",
            flush=True,
        )
        q = copy.deepcopy(ours).eval()
        before_ms = _inference_ms(ours, view(xte))
        fastlayers.quantize(q, calib_data=view(xtr[:256]))
        q_acc = _accuracy(q, view(xte), yte)
        after_ms = _inference_ms(q, view(xte))
        print(
            f"{'':12s} quantized: accuracy {acc:5.1f}% -> {q_acc:5.1f}%   "
            f"test-set inference {before_ms:.2f} ms -> {after_ms:.2f} ms",
            flush=True,
        )
        pictures += _explain_pictures(name, ours, view, xte, yte, out)
        results[name] = {
            "fastlayers_accuracy": acc,
            "torch_accuracy": acc_twin,
            "fastlayers_s_per_epoch": per_epoch,
            "torch_s_per_epoch": per_epoch_twin,
            "quantized": {"accuracy": q_acc, "inference_ms_before": before_ms, "inference_ms_after": after_ms},
        }

    _banner("fastlayers bench --quick: every op side by side with torch, at realistic sizes")
    bench_rows = bench.collect(device=device, quick=True, compiled=False)
    bench._common().print_table(bench_rows)

    summary = {
        "device": device,
        "epochs": epochs,
        "wall_s": time.perf_counter() - start,
        "check": {"passed": len(rows) - failed, "failed": failed, "rows": [list(r) for r in rows]},
        "models": results,
        "bench": [r.as_dict() for r in bench_rows],
        "pictures": pictures,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(_markdown(summary))
    print(f"\ndemo output (summary.md, summary.json, {len(pictures)} PNGs) written to {os.path.abspath(out)}")
    return 1 if failed else 0
