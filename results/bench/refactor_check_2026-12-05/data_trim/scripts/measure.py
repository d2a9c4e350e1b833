"""Line counts of a Python file: total, docstring lines, comment-only lines, blank lines, biggest defs."""
import ast, io, sys, tokenize
path = sys.argv[1]; src = open(path).read(); lines = src.splitlines(); tree = ast.parse(src)
doc = set()
for n in ast.walk(tree):
    if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body and \
            isinstance(n.body[0], ast.Expr) and isinstance(getattr(n.body[0], "value", None), ast.Constant) and \
            isinstance(n.body[0].value.value, str):
        doc.update(range(n.body[0].lineno, n.body[0].end_lineno + 1))
comment = {t.start[0] for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT
           and lines[t.start[0] - 1].strip().startswith("#")}
blank = sum(1 for l in lines if not l.strip())
print(f"{path}: {len(lines)} lines; docstrings {len(doc)}, comment-only {len(comment)}, blank {blank}, "
      f"code {len(lines) - len(doc) - len(comment) - blank}")
defs = []
for n in ast.walk(tree):
    if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
        defs.append((n.end_lineno - n.lineno + 1, n.name))
print("biggest:", ", ".join(f"{name} {k}" for k, name in sorted(defs, reverse=True)[:10]))
