// The API docs page: Swagger UI over /api/openapi.json, wired here (the CSP forbids inline
// scripts). No validator badge: it would send the document to validator.swagger.io.
(function () {
  "use strict";

  const root = document.getElementById("swagger-ui");
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content;
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Logged in to the panel, "Try it out" rides on the session: writes need its CSRF token.
    requestInterceptor: (request) => {
      if (csrf) request.headers["X-CSRF-Token"] = csrf;
      return request;
    },
  });
})();
