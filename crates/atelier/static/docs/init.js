// Starts Swagger UI on atelier's own OpenAPI document. Kept out of the HTML so the
// page's Content-Security-Policy can forbid inline script.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    tryItOutEnabled: true,
  });
});
