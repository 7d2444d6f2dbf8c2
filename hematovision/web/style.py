"""The page's look (theme, CSS), the research-use notice, and the Review tab's keyboard shortcuts."""

import gradio as gr

NOTICE = ("<b>Research use only.</b> HematoVision is not a diagnostic device: its results must not be used to "
          "diagnose or treat anyone, and every result needs review by a qualified specialist.")

THEME = gr.themes.Soft(
    primary_hue="indigo", secondary_hue="rose", neutral_hue="slate", radius_size="md",
    font=["Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)
# Colours come from the theme's variables (light and ?__theme=dark alike); a state only tints them.
CSS = """
.gradio-container {max-width: 1280px !important; margin: auto;}
#hv-header {display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; margin: 6px 0 2px;}
#hv-header h1 {font-size: 1.7rem; margin: 0; letter-spacing: -0.02em;}
#hv-header h1 span {color: #e11d48;}
#hv-header p {margin: 0; color: var(--body-text-color-subdued);}
.hv-notice {background: color-mix(in srgb, #f97316 14%, var(--block-background-fill)); border: 1px solid #fb923c;
            color: var(--body-text-color); border-radius: 8px; padding: 8px 12px; font-size: 0.9rem; margin-bottom: 4px;}
.hv-notice *, .hv-verdict * {color: inherit;}
.hv-verdict {border-radius: 10px; padding: 12px 16px; border: 1px solid; font-size: 0.95rem; color: var(--body-text-color);}
.hv-verdict p {margin: 6px 0 0;}
.hv-verdict .hv-head {font-size: 1.35rem; font-weight: 700; text-transform: capitalize;}
.hv-verdict .hv-icon {margin-right: 8px;}
.hv-confident {background: color-mix(in srgb, #10b981 14%, var(--block-background-fill)); border-color: #34d399;}
.hv-uncertain {background: color-mix(in srgb, #f59e0b 16%, var(--block-background-fill)); border: 2px solid #f59e0b;}
.hv-uncertain .hv-head {text-transform: none;}
.hv-empty {background: var(--block-background-fill); border-style: dashed; border-color: var(--border-color-primary);
           color: var(--body-text-color-subdued);}
.hv-desc {opacity: 0.9;}
#review-label .wrap {gap: 6px;}
#review-progress p {font-size: 1.05rem; margin: 0;}
#review-gallery .grid-container {grid-template-columns: repeat(auto-fill, minmax(100px, 1fr)) !important;}
#review-gallery .thumbnail-item {aspect-ratio: 1 / 1; height: auto !important;}
#review-gallery .caption-label {white-space: normal; max-width: calc(100% - 8px);}
.hv-legend p {margin: 0; font-size: 0.85rem; color: var(--body-text-color-subdued);}
footer {margin-top: 8px;}
@media (max-width: 640px) {#hv-header h1 {font-size: 1.35rem;} .hv-verdict .hv-head {font-size: 1.15rem;}
                           /* a wide table scrolls inside its block instead of widening the page */
                           .table-wrap {overflow-x: auto; max-width: calc(100vw - 96px);}}
"""

#: Keys that pick the n-th label of the Review tab's label choice (then the next cell is shown).
REVIEW_KEYS = "1234567890qwertyuiop"

# Review tab shortcuts, outside text fields: a key from REVIEW_KEYS records that label for the selected cell;
# n / ArrowRight and b / ArrowLeft step through the page. Captured first, so that an arrow key on a focused radio
# button never changes (and records) a label.
KEYBOARD_JS = """<script>
document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const labels = document.querySelector('#review-label');
  if (!labels || labels.offsetParent === null) return;
  const t = e.target, radio = t && t.type === 'radio';
  if (t && !radio && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(t.tagName))) return;
  const step = {ArrowRight: '#review-next', n: '#review-next', ArrowLeft: '#review-prev', b: '#review-prev'}[e.key];
  if (step) { e.preventDefault(); document.querySelector(step)?.click(); return; }
  if (radio && /^Arrow/.test(e.key)) { e.preventDefault(); return; }
  const i = '%s'.indexOf(e.key.toLowerCase());
  const options = labels.querySelectorAll('input[type=radio]');
  if (i >= 0 && i < options.length) { e.preventDefault(); options[i].click(); }
}, true);
</script>""" % REVIEW_KEYS
