cd /tmp/exp
CFG='{"encoder": {"mel": {"n_fft": 2048, "win_length": 2048, "hop_length": 256, "n_mels": 192, "stft": "fft"}, "vit": {"patch_freq": 12, "patch_time": 16, "width": 96, "depth": 3, "heads": 3, "head_dim": 32, "ff_dim": 192}, "clip_seconds": 4.0}, "hidden": 64}'
PYTHONPATH=/work/wt18 /work/main/.venv/bin/python train_pref.py --data train1000.pt train2000.pt train3000.pt --steps 1000 --config "$CFG" --out pref_gen_c.pt
