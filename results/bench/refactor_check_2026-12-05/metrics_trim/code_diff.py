"""Compare two versions of metrics.py as code: docstrings stripped, ast.unparse per top-level definition.
Prints the adaptive-contrast functions' status and a unified diff of whatever code differs."""
import ast, difflib, sys
AC = ["fit_moments", "logdet_bias", "gaussian_term", "whitening_artifact", "whiten", "ac_kl", "residual_check"]
def defs(path):
    t = ast.parse(open(path).read())
    for n in ast.walk(t):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr) \
                and isinstance(n.body[0].value, ast.Constant) and isinstance(n.body[0].value.value, str):
            n.body = n.body[1:] or [ast.Pass()]
    out = {}
    for n in t.body:
        name = getattr(n, "name", None) or ast.unparse(n).split("\n")[0][:60]
        out[name] = ast.unparse(n)
    return out
a, b = defs(sys.argv[1]), defs(sys.argv[2])
for f in AC:
    print(f"{f}: {'identical' if a[f] == b[f] else 'CHANGED'}")
print("top-level definitions only before:", sorted(set(a) - set(b)), "only after:", sorted(set(b) - set(a)))
for k in [k for k in a if k in b and a[k] != b[k]]:
    print("".join(difflib.unified_diff(a[k].splitlines(True), b[k].splitlines(True), f"before:{k}", f"after:{k}")))
