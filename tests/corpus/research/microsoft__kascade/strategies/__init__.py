# kvaudit test corpus: the package marker of microsoft/kascade's src/strategies (its own
# __init__.py imports every strategy, most of them not kept here).
