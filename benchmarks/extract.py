"""Extraction speed per feature set on a folder of clips, and frames vs a plain full decode.

    python benchmarks/extract.py CLIPS [--match 'Test_*'] [--sets frames,faces,fer] [--repeat 3]
                                       [--json out.json] [-p SET.KEY=VALUE ...]
    python benchmarks/extract.py CLIPS --sets embed-mobilenet_v2   # needs its weights fetched

Runs each extractor in this process (one core) over every video in the folder,
after one warm-up pass, and prints seconds per clip, clips/s and the real-time
factor (seconds of media per second of work). Each set alone decodes what it needs; the last row,
"all, one decode", runs every set on each clip as `gemo extract` does, decoding
the clip once. The full decode decodes every video frame (no conversion) and the
whole audio stream, as a reference for what `frames` saves. Parallel runs and
start-up are measured by benchmarks/pipeline.py.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, like each of gemo's pool workers

from media import decode_probe, machine, media_seconds, timed, videos  # benchmarks/media.py

from gemo import extractors
from gemo.data.media import MediaError
from gemo.extraction import run_clip


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sets", default="frames,pyaudio,egemaps,compare-lld,faces,fer,pose",
                        help="a set that requires another (fer needs faces) must come after it; "
                        "pose needs pip install 'gemo[pose]'")
    parser.add_argument("--match", default="*", metavar="GLOB",
                        help="only the videos whose file name matches, e.g. 'Test_*'")
    parser.add_argument("--repeat", type=int, default=3, help="best of N passes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("-p", "--param", action="append", default=[], metavar="SET.KEY=VALUE",
                        help="extractor parameter, as gemo extract takes it, e.g. "
                        "-p hubert.weights=DIR or -p pose.count=10")
    args = parser.parse_args()
    params = {}
    for text in args.param:
        key, _, value = text.partition("=")
        name, _, field = key.rpartition(".")
        if not (name and field and _):
            parser.error(f"{text!r}: expected SET.KEY=VALUE")
        params.setdefault(name, {})[field] = value
    paths = videos(args.folder, args.match)
    if not paths:
        parser.error(f"no video files matching {args.match!r} in {args.folder}")
    seconds_of_media = media_seconds(paths)
    results = {"clips": len(paths), "media_seconds": round(seconds_of_media, 2), "params": args.param,
               "machine": machine(), "sets": {}}
    print(", ".join(f"{key} {value}" for key, value in results["machine"].items()))
    decode = decode_probe(paths, passes=args.repeat)
    results["full_decode_s"] = round(decode, 3)
    print(f"{len(paths)} clips, {seconds_of_media:.1f} s of media")
    print(f"{'full decode':20s} {decode:7.3f} s  {decode / len(paths):6.3f} s/clip  "
          f"{len(paths) / decode:6.2f} clips/s  "
          f"{seconds_of_media / decode:6.1f}x real time")
    outputs = {}  # set -> {path: arrays}, for the sets that read another set's output
    for name in args.sets.split(","):
        extractor = extractors.create(name, **params.get(name, {}))
        missing = [r for r in extractor.requires if r not in outputs]
        if missing:
            parser.error(f"{name} requires {', '.join(missing)} earlier in --sets")

        def run(path, extractor=extractor):
            if extractor.requires:
                return extractor.extract(path, {r: outputs[r][path] for r in extractor.requires})
            return extractor.extract(path)

        failed, outputs[name] = [], {}
        for path in paths:  # warm-up, failure census, and outputs for later sets
            try:
                outputs[name][path] = run(path)
            except (MediaError, KeyError) as error:
                failed.append(f"{path.name}: {getattr(error, 'kind', 'upstream failed')}")
        ready = [p for p in paths if all(p in outputs[r] for r in extractor.requires)]
        took = timed(run, ready, args.repeat)
        row = {"seconds": round(took, 3), "seconds_per_clip": round(took / max(len(ready), 1), 3),
               "clips_per_s": round(len(paths) / took, 2),
               "real_time_factor": round(seconds_of_media / took, 1), "failed": failed}
        if name == "frames":
            row["ratio_to_full_decode"] = round(took / decode, 3)
        if name in ("faces", "pose"):  # detectors: frames per second matter
            frames = sum(len(out["counts"]) for out in outputs[name].values())
            row["frames_per_s"] = round(frames / took, 2)
        results["sets"][name] = row
        extra = f"  {row['ratio_to_full_decode']:.2f}x full decode" if name == "frames" else ""
        extra += f"  {row['frames_per_s']:.1f} frames/s" if "frames_per_s" in row else ""
        print(f"{name:20s} {took:7.3f} s  {row['seconds_per_clip']:6.3f} s/clip  "
              f"{row['clips_per_s']:6.2f} clips/s  "
              f"{row['real_time_factor']:6.1f}x real time{extra}"
              + (f"  (failed: {', '.join(failed)})" if failed else ""))
    chosen = [extractors.create(name, **params.get(name, {})) for name in args.sets.split(",")]
    took = timed(lambda path: run_clip(chosen, path), paths, args.repeat)
    results["all_one_decode"] = {"seconds": round(took, 3), "clips_per_s": round(len(paths) / took, 2),
                                 "real_time_factor": round(seconds_of_media / took, 1)}
    separate = sum(row["seconds"] for row in results["sets"].values())
    print(f"{'all, one decode':20s} {took:7.3f} s  {took / len(paths):6.3f} s/clip  "
          f"{len(paths) / took:6.2f} clips/s  "
          f"{seconds_of_media / took:6.1f}x real time  (sets one by one: {separate:.3f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
