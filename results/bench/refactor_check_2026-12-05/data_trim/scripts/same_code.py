"""Exit 0 if two Python files have the same AST once docstrings are removed (comments never reach the AST)."""
import ast, sys
def code(path):
    tree = ast.parse(open(path).read())
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body and \
                isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant) and \
                isinstance(n.body[0].value.value, str):
            n.body = n.body[1:] or [ast.Pass()]
    return ast.dump(tree)
a, b = sys.argv[1:3]
same = code(a) == code(b)
print(f"{a} vs {b}: " + ("same code (docstrings and comments aside)" if same else "CODE DIFFERS"))
sys.exit(0 if same else 1)
