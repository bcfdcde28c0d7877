"""Scratch (session 16): the reproduction's learned-quality numbers before and after the
judges changed. Reads docs/repro/claims.csv and students_test.csv at git revision OLD and
in the working tree; prints markdown: every claim row whose metric is a learned one or
whose verdict changed, and the students' learned quality, MuLan-style and preference
scores. Usage: judges_diff.py OLD_REV"""
import csv, io, subprocess, sys

old_rev = sys.argv[1]


def rows(path, rev=None):
    text = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout \
        if rev else open(path).read()
    return list(csv.DictReader(io.StringIO(text)))


def fmt(v, lo, hi, d=3):
    f = lambda x: f"{float(x):.{d}f}"
    return f"{f(v)} [{f(lo)}, {f(hi)}]"


old, new = rows("docs/repro/claims.csv", old_rev), rows("docs/repro/claims.csv")
key = lambda r: (r["claim"], r["comparison"], r["metric"], r["expected"][0])  # the bound may move
before = {key(r): r for r in old}
print("| claim | comparison | metric | before | after |\n|---|---|---|---|---|")
for r in new:
    b = before.get(key(r))
    learned = r["metric"] in ("quality", "mulan", "preference")
    if learned or (b and b["verdict"] != r["verdict"]):
        d = 1 if r["metric"] == "quality" else 3
        was = f"{fmt(b['difference'], b['low'], b['high'], d)} {b['verdict']}" if b else "-"
        print(f"| {r['claim']} | {r['comparison']} | {r['metric']} | {was} | "
              f"{fmt(r['difference'], r['low'], r['high'], d)} **{r['verdict']}** |")
print()
print("| beta | learned quality before | after | MuLan-style after | preference after |\n|---|---|---|---|---|")
so, sn = rows("docs/repro/students_test.csv", old_rev), rows("docs/repro/students_test.csv")
for b, n in zip(so, sn):
    print(f"| {n['beta']} | {fmt(b['quality'], b['quality_low'], b['quality_high'], 1)} | "
          f"{fmt(n['quality'], n['quality_low'], n['quality_high'], 1)} | "
          f"{fmt(n['mulan'], n['mulan_low'], n['mulan_high'])} | "
          f"{fmt(n['preference'], n['preference_low'], n['preference_high'], 2)} |")
print()
print("| run | learned quality before | after | MuLan-style after | preference after | oracle quality after |\n|---|---|---|---|---|---|")
ro = {r["run"]: r for r in rows("docs/repro/runs.csv", old_rev)}
for r in rows("docs/repro/runs.csv"):
    if r["kind"] != "cfg" or r["run"] not in ro:
        continue
    b = ro[r["run"]]
    print(f"| {r['run']} | {fmt(b['eval/quality'], b['eval/quality_ci_low'], b['eval/quality_ci_high'], 1)} | "
          f"{fmt(r['eval/quality'], r['eval/quality_ci_low'], r['eval/quality_ci_high'], 1)} | "
          f"{float(r['eval/mulan']):.4f} | {float(r['eval/preference']):.3f} | {float(r['eval/oracle_quality']):.3f} |")
