/** The Content-Security-Policy of Ingot's webviews: nothing remote, scripts only with the page's nonce (pure, unit-tested). */

export function contentSecurityPolicy(cspSource: string, scriptNonce: string): string {
  return [
    "default-src 'none'",
    `img-src ${cspSource} data:`,
    `style-src ${cspSource}`,
    `font-src ${cspSource}`,
    `script-src 'nonce-${scriptNonce}'`,
  ].join("; ");
}
