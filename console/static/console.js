// Keyboard shortcuts on the review page: s = same person, d = different people, k = skip.
// Only a key press on the page itself, never while typing in a field.
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  var target = event.target;
  if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  var button = document.querySelector('form.decide button[data-key="' + event.key + '"]');
  if (!button) return;
  event.preventDefault();
  button.click();
});
document.documentElement.setAttribute("data-keys", "on");
