// Fidelis pages: confirmation of destructive actions, the logo picker, the back link.
// Everything works without this script; it only adds comfort.
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { e.preventDefault(); }
  }, true);
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("[data-back]");
    if (a && window.history.length > 1) { e.preventDefault(); window.history.back(); }
  });
  document.addEventListener("change", function (e) {
    if (!e.target.matches || !e.target.matches("[data-logo-file]")) { return; }
    var file = e.target.files && e.target.files[0];
    var form = e.target.form;
    if (!file || !form) { return; }
    if (file.size > 120 * 1024) {
      window.alert(document.documentElement.lang === "fr" ? "Image trop lourde (120 Ko au plus)." : "Image too large (120 KB at most).");
      e.target.value = "";
      return;
    }
    var reader = new FileReader();
    reader.onload = function () {
      form.querySelector("[data-logo-data]").value = reader.result;
      var old = form.querySelector("[data-logo-preview]");
      var img = document.createElement("img");
      img.src = reader.result; img.alt = ""; img.setAttribute("data-logo-preview", "");
      old.replaceWith(img);
    };
    reader.readAsDataURL(file);
  });
})();
