// Drives one unmodified npm client against capgate: `node --require hostmap.cjs drive.cjs PACKAGE KEY`.
// Every call runs; each one's outcome is printed as one JSON object {call: {ok: value} | {error: text}}.
// IMAGE and GRID (base64 PNGs) and TAG (a word unique to the run) come from the environment.
'use strict';
const [pkg, key] = process.argv.slice(2);
const { IMAGE, GRID, TAG } = process.env;
const PAGE = `https://site.test/${TAG}`;
const SITEKEY = '6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx_mJ-';
const WRONG = '0123456789abcdef0123456789abcdef';

function drivers(lib) {
  switch (pkg) {
    case '@2captcha/captcha-solver':
    case '2captcha-ts': {
      const s = new lib.Solver(key, 200);
      const calls = {
        balance: () => s.balance(),
        image: () => s.imageCaptcha({ body: IMAGE, textinstructions: `sandbox-answer-${TAG}` }),
        recaptcha: () => s.recaptcha({ pageurl: PAGE, googlekey: SITEKEY }),
        turnstile: () => s.cloudflareTurnstile({ pageurl: PAGE, sitekey: '0x4AAAAAAAC3DHQFLr1GavRN' }),
        report: async () => s.goodReport((await s.imageCaptcha({ body: IMAGE, textinstructions: 'x' })).id),
        wrong_key: () => new lib.Solver(WRONG, 200).imageCaptcha({ body: IMAGE }),
      };
      if (typeof s.grid === 'function') {
        calls.grid = () => s.grid({ body: GRID, textinstructions: 'select all bicycles', rows: 3, cols: 3 });
      }
      return calls;
    }
    case '2captcha': {
      const s = new lib.Solver(key, 200);
      return {
        balance: () => s.balance(),
        image: () => s.imageCaptcha(IMAGE, { textinstructions: `sandbox-answer-${TAG}` }),
        recaptcha: () => s.recaptcha(SITEKEY, PAGE),
        report: async () => s.goodReport((await s.imageCaptcha(IMAGE, { textinstructions: 'x' })).id),
        wrong_key: () => new lib.Solver(WRONG, 200).imageCaptcha(IMAGE),
      };
    }
    case 'rucaptcha-2captcha': {
      const c = new lib(key, 2);
      return {
        balance: () => c.getBalance(),
        image: async () => {
          const id = await c.send({ method: 'base64', body: IMAGE, textinstructions: `sandbox-answer-${TAG}` });
          return { id, data: await c.get(id) };
        },
        price: async () => c.getWithPrice(await c.send({ method: 'base64', body: IMAGE, textinstructions: 'y' })),
        report: async () => {
          const id = await c.send({ method: 'base64', body: IMAGE, textinstructions: 'x' });
          await c.get(id);
          return c.reportGood(id);
        },
        wrong_key: () => new lib(WRONG, 2).send({ method: 'base64', body: IMAGE }),
      };
    }
    case '2captcha-node': {
      const solver = lib.default(key);
      return {
        balance: () => solver.balance(),
        image: () => solver.solve({ image: IMAGE, maxAttempts: 30 }),
      };
    }
    default:
      throw new Error(`no driver for ${pkg}`);
  }
}

(async () => {
  const calls = drivers(require(pkg));
  const names = Object.keys(calls);
  const settled = await Promise.allSettled(names.map((name) => calls[name]()));
  const out = {};
  names.forEach((name, i) => {
    const r = settled[i];
    out[name] = r.status === 'fulfilled' ? { ok: r.value === undefined ? null : r.value }
      : { error: String((r.reason && (r.reason.name && r.reason.name !== 'Error' ? r.reason.name + ': ' : '') + r.reason.message) || r.reason) };
  });
  process.stdout.write(JSON.stringify(out));
})();
