# Renders a tmux `capture-pane -e -p` dump (SGR colours and bold) as HTML for a headless-chromium
# screenshot: python3 scripts/pane-to-html.py pane.txt TITLE > pane.html (docs/OPERATING.md, "Waiting").
import html, re, sys
colours = {30:'#1e1e1e',31:'#e06c75',32:'#98c379',33:'#e5c07b',34:'#61afef',35:'#c678dd',36:'#56b6c2',37:'#abb2bf'}
out, bold, fg = [], False, None
def span(text):
    if not text: return ''
    style = []
    if bold: style.append('font-weight:bold')
    if fg: style.append('color:'+fg)
    t = html.escape(text)
    return f'<span style="{";".join(style)}">{t}</span>' if style else t
src = open(sys.argv[1], encoding='utf-8').read().rstrip('\n')
pos = 0
for m in re.finditer(r'\x1b\[([0-9;]*)m', src):
    out.append(span(src[pos:m.start()])); pos = m.end()
    for c in [int(x) for x in (m.group(1) or '0').split(';') if x]:
        if c == 0: bold, fg = False, None
        elif c == 1: bold = True
        elif c == 22: bold = False
        elif c == 39: fg = None
        elif c in colours: fg = colours[c]
out.append(span(src[pos:]))
title = sys.argv[2]
print(f'''<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>
<body style="margin:0;background:#282c34"><div style="padding:6px 10px;background:#3b3f47;color:#ccc;font:13px sans-serif">{html.escape(title)}</div>
<pre style="margin:0;padding:10px;color:#dcdfe4;font:14px/1.35 'DejaVu Sans Mono',monospace">{''.join(out)}</pre></body>''')
