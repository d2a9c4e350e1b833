import ast, sys, io, tokenize
src = open(sys.argv[1]).read()
lines = src.splitlines()
tree = ast.parse(src)
doc = set()
for n in ast.walk(tree):
    if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant) and isinstance(n.body[0].value.value, str):
        e = n.body[0]
        doc.update(range(e.lineno, e.end_lineno + 1))
com = set(); blank = 0
for i, l in enumerate(lines, 1):
    s = l.strip()
    if not s and i not in doc: blank += 1
    elif s.startswith('#'): com.add(i)
print(f"total {len(lines)} docstring {len(doc)} comment {len(com - doc)} blank {blank} code {len(lines)-len(doc)-len(com-doc)-blank}")
fs = []
for n in ast.walk(tree):
    if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
        fs.append((n.end_lineno - n.lineno + 1, n.name, n.lineno))
fs.sort(reverse=True)
print("biggest:", ", ".join(f"{nm} {k}" for k, nm, _ in fs[:12]))
