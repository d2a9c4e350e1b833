"""python same_code.py OLD NEW: are two versions of a module the same code, differing only in prose?

Three checks, each must hold (exit 0 if all do):
  1. ast:    ast.dump of both, with the docstring of the module and of every function/class removed, is equal.
  2. tokens: the tokenize streams, with COMMENT, NL and docstring STRING tokens (and the NEWLINE ending a
             docstring statement) dropped, are equal token for token (type and text).
  3. lines:  the code lines (not blank, not inside a docstring, a trailing comment cut off) are equal as a
             sequence, character for character: no code line was reformatted, joined or split.
It also prints how each changed line (difflib) is classified in OLD / NEW: docstring, comment, blank or code."""
import ast
import difflib
import io
import sys
import tokenize


def docstring_nodes(tree):
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body \
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant) \
                and isinstance(n.body[0].value.value, str):
            yield n


def ast_without_docstrings(src):
    tree = ast.parse(src)
    for n in docstring_nodes(tree):
        n.body = n.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def docstring_lines(src):
    """Line numbers (1-based) covered by docstrings, and the start positions of docstring STRING tokens."""
    lines, starts = set(), set()
    for n in docstring_nodes(ast.parse(src)):
        e = n.body[0]
        lines.update(range(e.lineno, e.end_lineno + 1))
        starts.add((e.lineno, e.col_offset))
    return lines, starts


def code_tokens(src):
    _, starts = docstring_lines(src)
    out, skip_newline = [], False
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL):
            continue
        if tok.type == tokenize.STRING and tok.start in starts:
            skip_newline = True
            continue
        if skip_newline and tok.type == tokenize.NEWLINE:
            skip_newline = False
            continue
        skip_newline = False
        out.append((tokenize.tok_name[tok.type], tok.string))
    return out


def classify(src):
    """Per line: 'docstring', 'comment', 'blank' or 'code'; and each code line without its trailing comment."""
    doc, _ = docstring_lines(src)
    comment_col = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comment_col[tok.start[0]] = tok.start[1]
    kinds, code = [], []
    for i, line in enumerate(src.splitlines(), 1):
        if i in doc:
            kinds.append("docstring")
        elif not line.strip():
            kinds.append("blank")
        elif i in comment_col and not line[:comment_col[i]].strip():
            kinds.append("comment")
        else:
            kinds.append("code")
            code.append(line[:comment_col.get(i, len(line))].rstrip())
    return kinds, code


def main(old_path, new_path):
    old, new = open(old_path, encoding="utf-8").read(), open(new_path, encoding="utf-8").read()
    ok_ast = ast_without_docstrings(old) == ast_without_docstrings(new)
    ok_tok = code_tokens(old) == code_tokens(new)
    (k_old, c_old), (k_new, c_new) = classify(old), classify(new)
    ok_lines = c_old == c_new
    print(f"1. ast.dump, docstrings stripped, equal:            {ok_ast}")
    print(f"2. token streams (no comments/NL/docstrings) equal: {ok_tok} ({len(code_tokens(old))} tokens)")
    print(f"3. code lines (trailing comments cut) equal:        {ok_lines} ({len(c_old)} code lines)")
    a, b = old.splitlines(), new.splitlines()
    removed, added = {}, {}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        for i in range(i1, i2):
            removed[k_old[i]] = removed.get(k_old[i], 0) + 1
        for j in range(j1, j2):
            added[k_new[j]] = added.get(k_new[j], 0) + 1
    print(f"changed lines by kind: removed from OLD {dict(sorted(removed.items()))}; "
          f"added in NEW {dict(sorted(added.items()))}")
    code_changed = removed.get("code", 0) + added.get("code", 0)
    if code_changed:
        print(f"NOTE: {code_changed} changed line(s) hold code; checks 2 and 3 say whether only a trailing comment moved")
    print(f"lines: {len(a)} -> {len(b)}")
    ok = ok_ast and ok_tok and ok_lines
    print("SAME CODE" if ok else "CODE DIFFERS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
