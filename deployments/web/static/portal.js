// Tell the server a person's browser has the page open ("last opened"); a mail scanner that
// only fetches the link never runs this, and a GET never writes anything.
(function () {
  var el = document.getElementById("seen");
  if (!el || !window.fetch) { return; }
  fetch(el.getAttribute("data-url"), {method: "POST", credentials: "same-origin",
                                       headers: {"Content-Type": "application/x-www-form-urlencoded"},
                                       body: ""}).catch(function () {});
})();
