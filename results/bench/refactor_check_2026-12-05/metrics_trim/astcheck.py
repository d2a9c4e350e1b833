"""ast.dump of a module with every docstring removed: equal <=> the same code (comments/format aside)."""
import ast, sys
def strip(path):
    t = ast.parse(open(path).read())
    for n in ast.walk(t):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body \
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant) \
                and isinstance(n.body[0].value.value, str):
            n.body = n.body[1:] or [ast.Pass()]
    return ast.dump(t)
a, b = strip(sys.argv[1]), strip(sys.argv[2])
print("code identical (ast.dump, docstrings stripped):", a == b, len(a))
sys.exit(0 if a == b else 1)
