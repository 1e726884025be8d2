#!/usr/bin/env python3
"""Print the call graph between pg_ratelimit's modules and fail on a cycle.

A module is a source file under src/, except that the ledger's files
(ledger*.c) form one module.  An edge A -> B means code in A calls a
function defined in B; derived from the object files' symbol tables, so
run it after `make`.
"""
import glob, os, subprocess, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src')
def module(path):
    name = os.path.basename(path)[:-2]
    return 'ledger' if name.startswith('ledger') else name

defined, used = {}, {}
for obj in sorted(glob.glob(os.path.join(root, '*.o'))):
    m = module(obj)
    out = subprocess.run(['nm', obj], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in 'TDBR':
            defined[parts[2]] = m
        elif len(parts) == 2 and parts[0] == 'U':
            used.setdefault(m, set()).add(parts[1])
edges = {m: sorted({defined[s] for s in syms if s in defined and defined[s] != m})
         for m, syms in used.items()}
for m in sorted(edges):
    print(f'{m:14} -> {" ".join(edges[m])}')

# any cycle?
state, stack, cycles = {}, [], []
def visit(m):
    state[m] = 1; stack.append(m)
    for n in edges.get(m, []):
        if state.get(n) == 1:
            cycles.append(stack[stack.index(n):] + [n])
        elif n not in state:
            visit(n)
    stack.pop(); state[m] = 2
for m in sorted(edges):
    if m not in state:
        visit(m)
for c in cycles:
    print('cycle: ' + ' -> '.join(c))
print(('not ok' if cycles else 'ok') + ' 1 - no call cycles between modules')
sys.exit(1 if cycles else 0)
