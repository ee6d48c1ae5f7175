// Starts Swagger UI on /docs. A file, not an inline script, so the page runs under `script-src 'self'`.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // Offline-first: no badge fetched from validator.swagger.io.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
