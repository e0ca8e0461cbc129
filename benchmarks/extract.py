"""Benchmark: the Ray extraction pipeline vs a plain one-process loop (same extractors, same clips).

    python benchmarks/extract.py [--input data/sample] [--every-k 2] [--scale 4]

Prints frames/s of both (alternating rounds, with the load average: other processes on the machine
skew the ratio) and their ratio, for the input and for ``--scale`` times as many clips (Ray's fixed
start-up weighs less there), the CPU seconds per frame of both, then the peak memory of each kind of
Ray worker for 1x and ``--scale``x the clip count (memory must not grow with the input).
Not a test: timings vary by machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from facex_data.demo_clips import CLIP_DIR, DemoClipsConfig, make_demo_clips  # noqa: E402
from facex_data.extraction import ExtractConfig, run_extraction  # noqa: E402
from facex_data.manifest import FrameSelection  # noqa: E402


class RssMonitor:
    """Peak memory per Ray worker (RSS and USS: RSS counts object-store pages a worker touched, USS only
    its private memory) and the CPU seconds used by every process of the Ray session."""

    def __init__(self) -> None:
        self.peak: dict[int, tuple[int, int]] = {}
        self.role: dict[int, str] = {}
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self) -> None:
        me = psutil.Process()
        for proc in me.children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
                t = proc.cpu_times()
                cpu = t.user + t.system
                mem = proc.memory_full_info() if proc.pid in self.role or "Clip" in title or "Frame" in title else None
            except psutil.Error:
                continue
            self.cpu_start.setdefault(proc.pid, cpu)
            self.cpu_last[proc.pid] = cpu
            if "FrameExtractor" in title:
                self.role[proc.pid] = "extractor actor"
            elif "ClipDecoder" in title:
                self.role[proc.pid] = "decoder actor"
            if proc.pid in self.role and mem is not None:
                rss, uss = self.peak.get(proc.pid, (0, 0))
                self.peak[proc.pid] = (max(rss, mem.rss), max(uss, mem.uss))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(0.5)  # sparse: the monitor must not steal CPU from what it measures

    def __enter__(self) -> RssMonitor:
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def cpu_seconds(self) -> float:
        """CPU used during the run by the Ray processes (actors, raylet, GCS, agents); actors that exited
        between two samples lose at most 0.5 s each."""
        return sum(self.cpu_last[p] - self.cpu_start[p] for p in self.cpu_last)

    def by_role(self) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for pid, (rss, uss) in self.peak.items():
            old = out.get(self.role[pid], (0.0, 0.0))
            out[self.role[pid]] = (max(old[0], rss / 2**20), max(old[1], uss / 2**20))
        return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def replicate(src: Path, dst: Path, times: int) -> Path:
    """``times`` copies of every clip of ``src`` (symlinks under new ids) in CelebV-HQ layout."""
    (dst / CLIP_DIR).mkdir(parents=True)
    for clip in sorted((src / CLIP_DIR).glob("*.mp4")):
        for k in range(times):
            (dst / CLIP_DIR / f"{clip.stem}-x{k}.mp4").symlink_to(clip.resolve())
    return dst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=REPO / "data" / "demo_clips")
    parser.add_argument("--every-k", type=int, default=2, help="sample every k-th frame")
    parser.add_argument("--scale", type=int, default=4, help="clip-count multiple for the memory check")
    parser.add_argument("--num-actors", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="sequential/ray pairs, run alternately")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="facex-bench-") as tmp:
        tmp = Path(tmp)
        src = args.input
        if not (src / CLIP_DIR).is_dir():
            print(f"{src} has no clips: generating the demo clips in {tmp / 'demo_clips'}")
            src = tmp / "demo_clips"
            make_demo_clips(DemoClipsConfig(out_dir=src), progress=False)
        base = ExtractConfig(
            input_dir=src, frames=FrameSelection(mode="every_k", every_k=args.every_k, min_clip_frames=1),
            clips_per_shard=2, batch_size=8, num_actors=args.num_actors, progress=False,
        )
        print(f"clips: {len(list((src / CLIP_DIR).glob('*.mp4')))} from {src}, every {args.every_k}th frame, "
              f"{os.cpu_count()} CPU cores")

        rounds = []
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            # alternate the two runners so that load from other processes hits both alike
            for r in range(args.rounds):
                load = os.getloadavg()[0]
                cpu0 = _cpu()
                seq = run_extraction(dataclasses.replace(base, runner="local", out_dir=tmp / f"seq{r}"))
                seq_cpu = _cpu() - cpu0
                cpu0 = _cpu()
                with RssMonitor() as mon1:
                    par = run_extraction(dataclasses.replace(base, out_dir=tmp / f"ray{r}"))
                par_cpu = mon1.cpu_seconds() + _cpu() - cpu0
                rounds.append((seq, par, load, os.getloadavg()[0], seq_cpu, par_cpu))
            big = replicate(src, tmp / f"x{args.scale}", args.scale)
            seq4 = run_extraction(dataclasses.replace(base, runner="local", input_dir=big, out_dir=tmp / "seq-big"))
            with RssMonitor() as mon4:
                par4 = run_extraction(dataclasses.replace(base, input_dir=big, out_dir=tmp / f"ray-x{args.scale}"))
        finally:
            ray.shutdown()
        same = all((tmp / "seq0" / p.name).read_bytes() == p.read_bytes() for p in (tmp / "ray0").glob("shard-*.tar"))

        print()
        print(f"{'round':<7}{'runner':<24}{'frames':>8}{'seconds':>10}{'frames/s':>10}{'ratio':>8}{'load 1m':>10}")
        for r, (seq, par, load0, load1, *_) in enumerate(rounds):
            ratio = par.frames_per_second / seq.frames_per_second
            print(f"{r:<7}{'sequential (1 process)':<24}{seq.frames_processed:>8}{seq.seconds:>10.1f}"
                  f"{seq.frames_per_second:>10.2f}{'':>8}{load0:>10.2f}")
            print(f"{r:<7}{'ray (' + str(args.num_actors) + ' actors)':<24}{par.frames_processed:>8}"
                  f"{par.seconds:>10.1f}{par.frames_per_second:>10.2f}{ratio:>8.2f}{load1:>10.2f}")
        big_label = f"{args.scale}x"
        print(f"{big_label:<7}{'sequential (1 process)':<24}{seq4.frames_processed:>8}{seq4.seconds:>10.1f}"
              f"{seq4.frames_per_second:>10.2f}")
        print(f"{big_label:<7}{'ray (' + str(args.num_actors) + ' actors)':<24}{par4.frames_processed:>8}"
              f"{par4.seconds:>10.1f}{par4.frames_per_second:>10.2f}"
              f"{par4.frames_per_second / seq4.frames_per_second:>8.2f}")
        seq_fps = sum(s.frames_processed for s, *_ in rounds) / sum(s.seconds for s, *_ in rounds)
        par_fps = sum(p.frames_processed for _, p, *_ in rounds) / sum(p.seconds for _, p, *_ in rounds)
        for summary in [x for r in rounds for x in r[:2]] + [seq4, par4]:
            for clip in summary.ledger["clips"]:
                if clip["status"] != "written":  # every run must write every clip, or the ratio means nothing
                    print(f"SKIPPED in a {summary.ledger['run']['runner']} run: {clip['clip_id']}: {clip['reason']}")
        print(f"ratio ray / sequential, 1x clips over all rounds: {par_fps / seq_fps:.2f} "
              f"({par_fps:.2f} / {seq_fps:.2f} frames/s); shards byte-identical: {same}")
        print(f"ratio ray / sequential, {args.scale}x clips: "
              f"{par4.frames_per_second / seq4.frames_per_second:.2f} (goal >= 1.6; Ray's start-up, a few seconds "
              "of actors loading their models, weighs less on the larger input)")
        print()
        seq_cpu = sum(x[4] for x in rounds) / sum(x[0].frames_processed for x in rounds)
        par_cpu = sum(x[5] for x in rounds) / sum(x[1].frames_processed for x in rounds)
        cores = os.cpu_count() or 1
        print(f"CPU seconds per frame: sequential {seq_cpu:.3f}, ray {par_cpu:.3f} (all Ray processes included); "
              f"on {cores} otherwise idle cores the ray runner could reach at most "
              f"{cores * seq_cpu / par_cpu:.2f}x the sequential loop")
        print()
        print(f"{'peak memory per worker (MiB)':<28}{'RSS 1x':>10}{'RSS ' + str(args.scale) + 'x':>10}"
              f"{'USS 1x':>10}{'USS ' + str(args.scale) + 'x':>10}")
        r1, r4 = mon1.by_role(), mon4.by_role()
        for role in sorted(set(r1) | set(r4)):
            (a, b), (c, d) = r1.get(role, (0, 0)), r4.get(role, (0, 0))
            print(f"{role:<28}{a:>10.0f}{c:>10.0f}{b:>10.0f}{d:>10.0f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"driver peak RSS over the whole benchmark (sequential run included): {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
