import time, json, numpy as np, torch
torch.set_num_threads(1)
from geomem.numerics.training import TrainingConfig, train_ensemble, load_ensemble
from geomem.numerics.memorization import score_jacobians, denoiser_rank, time_of_sigma
from geomem.theory.manifold import LinearManifold
m=LinearManifold.figure4()
ns=(64,256); Ys=[m.sample(n, np.random.default_rng(n)) for n in ns]
cfgs={      "fast": TrainingConfig(steps=10000),
      "fast_sigmamax50": TrainingConfig(steps=10000, sigma_max=50.0),
      "fast_width128": TrainingConfig(steps=10000, width=128),
      "fast_noema_warmup": TrainingConfig(steps=10000, ema_warmup=False)}
rng=np.random.default_rng(5); sigma=0.02
for name,cfg in cfgs.items():
    t0=time.time(); run=train_ensemble(Ys,cfg,[0,0],folder=f"/tmp/abl/{name}"); dt=time.time()-t0
    res={}
    for step in (1000, 2000, 5000, 10000):
        s=min(run.snapshots, key=lambda s: abs(s-step))
        e=load_ensemble(f"/tmp/abl/{name}", s)
        kept=[]
        for i,(n,Y) in enumerate(zip(ns,Ys)):
            net=e.member(i); t=time_of_sigma(net.schedule, sigma)
            X=Y[:32]+sigma*np.random.default_rng(1).standard_normal((32,30))
            J=score_jacobians(net.score, X, t)
            kept.append(float(denoiser_rank(J,1.0,sigma**2).mean()))
        res[s]=kept
    print(name, f"{dt:.0f}s {10000/dt:.0f} steps/s (2 members)", res, flush=True)
