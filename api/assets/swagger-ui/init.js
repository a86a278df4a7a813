// Starts Swagger UI on /docs. A file rather than an inline <script> so the page works under
// `script-src 'self'`. No standalone preset: the default BaseLayout needs only the bundle (the
// preset adds the top bar with its URL box, which /docs does not want).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  // The default sends the spec's URL to validator.swagger.io for a badge: an outside request the
  // CSP would block anyway, and /docs is meant to work offline.
  validatorUrl: null,
});
