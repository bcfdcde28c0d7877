"""Scratch (session 20): the nearest mood word (among the corpus captions' mood words) of nine
eval-only mood words, each embedded by MiniLM bare and in three contexts; prints the hits."""
import sys, torch
sys.path.insert(0, "/work/main")
from suite.models.text_tower import default_tower
tw = default_tower()
moods = {"dark": ["dark", "ominous", "menacing", "brooding"], "happy": ["happy", "cheerful", "joyful", "uplifting"], "calm": ["calm", "peaceful", "soothing", "relaxing"], "sad": ["sad", "sorrowful", "gloomy"], "energetic": ["energetic", "lively", "driving"], "romantic": ["romantic", "loving", "sentimental", "tender"]}
tests = {"haunting": "dark", "explosive": "energetic", "tearful": "sad", "sunny": "happy", "intimate": "romantic", "serene": "calm", "pumping": "energetic", "carefree": "happy", "peppy": "happy"}
for tmpl in ("{}", "a {} piece of music", "{} music", "this song sounds {}"):
    ok = 0
    for w, truth in tests.items():
        e = tw.encode([tmpl.format(w)])[0]
        best = max(((float(tw.encode([tmpl.format(m)])[0] @ e), k) for k, ws in moods.items() for m in ws))
        ok += best[1] == truth
        print(tmpl, w, best)
    print("TEMPLATE", tmpl, ok, "/", len(tests))
