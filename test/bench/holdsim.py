#!/usr/bin/env python3
# test/bench/holdsim.py -- is holding a slot idle sound when durations differ
# from the estimates?  A one-off experiment behind doc/planner.md's "Held
# slots" (run by hand; not part of make bench; no parflow code).
#
#   cc -O2 -o /tmp/stgexact test/bench/stgexact.c
#   /tmp/stgexact    test/bench/stg/100/rand0000.stg 8 >/tmp/delay.txt   # 94, idles
#   /tmp/stgexact -n test/bench/stg/100/rand0000.stg 8 >/tmp/list.txt    # 95, a list schedule
#   python3 test/bench/holdsim.py test/bench/stg/100/rand0000.stg /tmp/delay.txt /tmp/list.txt 8
#
# Each policy is run by a dispatcher that, whenever a processor is free,
# starts the ready task of highest rank (rank = planned start, reversed);
# durations are the estimates times exp(N(0, sigma)), 1000 draws per sigma
# (seeded).  Policies: the list schedule's ranks; the delay schedule's ranks
# alone; those plus an event hold on each task the delay schedule starts
# later than a free processor would have allowed (it waits for the finish of
# the task before it on its processor in that schedule: an extra
# precedence arc, so feasible for any durations); and every processor of the
# delay schedule chained that way (a full earliest-start policy).
import sys, random, math, heapq
stg, delayf, listf, m = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cost={}; pred={}
for l in open(stg):
    if l.startswith('#'): continue
    r=list(map(int,l.split()))
    if r[0]==0: continue
    cost[r[0]]=r[1]; pred[r[0]]=[p for p in r[3:3+r[2]] if p>0]
def sched(f):
    S={};F={};P={}
    for l in open(f):
        x=l.split()
        if len(x)==4 and x[0].isdigit(): S[int(x[0])]=int(x[1]);F[int(x[0])]=int(x[2]);P[int(x[0])]=int(x[3])
    return S,F,P
dS,dF,dP=sched(delayf); lS,lF,lP=sched(listf)
T=list(cost)
def chain_arcs(S,F,P,only=None):
    arcs={v:[] for v in T}
    byp={}
    for v in T:
        if cost[v]>0: byp.setdefault(P[v],[]).append(v)
    for p,vs in byp.items():
        vs.sort(key=lambda v:S[v])
        for a,b in zip(vs,vs[1:]):
            if only is None or b in only: arcs[b].append(a)
    return arcs
def delayed(S,F):
    out=set()
    for v in T:
        if cost[v]==0: continue
        r=max([F[u] for u in pred[v]]+[0])
        pts=[r]+[F[u] for u in T if r<=F[u]<S[v]]
        for x in pts:
            if x<S[v] and sum(1 for u in T if cost[u]>0 and S[u]<=x<F[u])<m: out.add(v);break
    return out
def run(dur, rank, extra):
    # non-delay dispatcher: whenever a slot is free, start the ready task of highest rank; extra = waits-for arcs
    preds={v:pred[v]+extra.get(v,[]) for v in T}
    done={}; start={}; t=0.0; running=[]
    left=set(T)
    while left:
        ready=[v for v in left if v not in start and all(u in done and done[u]<=t for u in preds[v])]
        ready.sort(key=lambda v:(-rank[v],v))
        for v in ready:
            if cost[v]==0: start[v]=t; done[v]=t; left.discard(v); continue
            if len(running)<m:
                start[v]=t; heapq.heappush(running,(t+dur[v],v))
        if any(v in left and v not in start and cost[v]==0 and all(u in done and done[u]<=t for u in preds[v]) for v in left):
            continue
        if not running:
            if left: raise Exception("stuck")
            break
        tf,v=heapq.heappop(running); t=tf; done[v]=tf; left.discard(v)
        while running and running[0][0]<=t:
            tf,v=heapq.heappop(running); done[v]=tf; left.discard(v)
    return max(done.values())
rank_l={v:-lS[v] for v in T}; rank_d={v:-dS[v] for v in T}
dl=delayed(dS,dF)
pol={'list plan (95)':(rank_l,{}),
     'delay plan ranks only':(rank_d,{}),
     'delay plan + holds on its delayed tasks':(rank_d,chain_arcs(dS,dF,dP,dl)),
     'delay plan, every processor chained (ES-policy)':(rank_d,chain_arcs(dS,dF,dP))}
print("delayed tasks in the 94 schedule:", sorted(dl))
rng=random.Random(17)
for sigma in (0,0.05,0.1,0.2,0.3):
    res={k:[] for k in pol}
    N=1 if sigma==0 else 1000
    for i in range(N):
        dur={v:cost[v]*math.exp(rng.gauss(0,sigma)) if sigma else cost[v] for v in T}
        for k,(r,e) in pol.items(): res[k].append(run(dur,r,e))
    print("sigma %.2f:"%sigma, "; ".join("%s mean %.2f"%(k,sum(x)/len(x)) for k,x in res.items()),
          "" if N==1 else "; hold beats list in %d of %d"%(sum(1 for a,b in zip(res['delay plan + holds on its delayed tasks'],res['list plan (95)']) if a<b-1e-9),N))
