"""One method per registry row, written once for both clients.

The sync client returns ``Solution[...]`` and the async one ``Awaitable[Solution[...]]``: the return
types are type parameters of :class:`Methods`, so each wrapper is a single line of parameter naming
over ``_call`` and mypy still knows that ``normal()`` gives a :class:`TextAnswer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar, cast

from capgate.client._engine import ImageInput, ParamValue

TextR = TypeVar("TextR")
TokenR = TypeVar("TokenR")
GeeTestR = TypeVar("GeeTestR")
ClearanceR = TypeVar("ClearanceR")
CellsR = TypeVar("CellsR")
ObjectR = TypeVar("ObjectR")
AnyR = TypeVar("AnyR")
CoordinatesR = TypeVar("CoordinatesR")
AngleR = TypeVar("AngleR")


class Methods(Generic[TextR, TokenR, GeeTestR, ClearanceR, CellsR, ObjectR, AnyR, CoordinatesR, AngleR]):
    def _call(self, method: str, timeout: float | None, params: dict[str, object]) -> Any:
        raise NotImplementedError

    def solve(self, method: str, *, timeout: float | None = None, **params: object) -> AnyR:
        """Solve any registry type by name (``capgate.protocol.methods.BY_NAME``) with its in.php
        parameters; ``image=`` (path, bytes, base64, data URI or URL) and ``images=[...]`` (BLS) are
        turned into the wire's base64 fields."""
        return cast(AnyR, self._call(method, timeout, params))

    # ------------------------------------------------------------------------------------------ images

    def normal(self, image: ImageInput, *, numeric: int | None = None, min_len: int | None = None,
               max_len: int | None = None, phrase: bool | None = None, case_sensitive: bool | None = None,
               calc: bool | None = None, lang: str | None = None, language: int | None = None,
               instructions: str | None = None, timeout: float | None = None, **extra: ParamValue) -> TextR:
        return cast(TextR, self._call("normal", timeout, dict(
            image=image, numeric=numeric, min_len=min_len, max_len=max_len, phrase=phrase,
            regsense=case_sensitive, calc=calc, lang=lang, language=language, textinstructions=instructions,
            **extra)))

    def grid(self, image: ImageInput, instructions: str, *, grid_size: str | None = None,
             rows: int | None = None, cols: int | None = None, timeout: float | None = None,
             **extra: ParamValue) -> CellsR:
        # CaptchaAI reads "instructions", 2captcha "textinstructions": send both, the other is ignored.
        return cast(CellsR, self._call("grid", timeout, dict(
            image=image, instructions=instructions, textinstructions=instructions, grid_size=grid_size,
            recaptcharows=rows, recaptchacols=cols, **extra)))

    def bls(self, images: Sequence[ImageInput], instructions: str, *, timeout: float | None = None,
            **extra: ParamValue) -> CellsR:
        return cast(CellsR, self._call("bls", timeout, dict(images=images, instructions=instructions, **extra)))

    # ------------------------------------------------------------------------------------------ tokens

    def recaptcha_v2(self, sitekey: str, pageurl: str, *, invisible: bool | None = None,
                     data_s: str | None = None, cookies: str | None = None, user_agent: str | None = None,
                     timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("recaptcha_v2", timeout, {
            "googlekey": sitekey, "pageurl": pageurl, "invisible": invisible, "data-s": data_s,
            "cookies": cookies, "userAgent": user_agent, **extra}))

    def recaptcha_v2_enterprise(self, sitekey: str, pageurl: str, *, action: str | None = None,
                                invisible: bool | None = None, data_s: str | None = None,
                                cookies: str | None = None, user_agent: str | None = None,
                                timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("recaptcha_v2_enterprise", timeout, {
            "googlekey": sitekey, "pageurl": pageurl, "action": action, "invisible": invisible,
            "data-s": data_s, "cookies": cookies, "userAgent": user_agent, **extra}))

    def recaptcha_v3(self, sitekey: str, pageurl: str, *, action: str | None = None,
                     min_score: float | None = None, user_agent: str | None = None,
                     timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("recaptcha_v3", timeout, dict(
            googlekey=sitekey, pageurl=pageurl, action=action, min_score=min_score, userAgent=user_agent,
            **extra)))

    def recaptcha_v3_enterprise(self, sitekey: str, pageurl: str, *, action: str | None = None,
                                min_score: float | None = None, user_agent: str | None = None,
                                timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("recaptcha_v3_enterprise", timeout, dict(
            googlekey=sitekey, pageurl=pageurl, action=action, min_score=min_score, userAgent=user_agent,
            **extra)))

    def turnstile(self, sitekey: str, pageurl: str, *, action: str | None = None, data: str | None = None,
                  pagedata: str | None = None, user_agent: str | None = None, timeout: float | None = None,
                  **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("turnstile", timeout, dict(
            sitekey=sitekey, pageurl=pageurl, action=action, data=data, pagedata=pagedata,
            userAgent=user_agent, **extra)))

    def hcaptcha(self, sitekey: str, pageurl: str, *, invisible: bool | None = None, data: str | None = None,
                 domain: str | None = None, user_agent: str | None = None, timeout: float | None = None,
                 **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("hcaptcha", timeout, dict(
            sitekey=sitekey, pageurl=pageurl, invisible=invisible, data=data, domain=domain,
            userAgent=user_agent, **extra)))

    def captchafox(self, sitekey: str, pageurl: str, proxy: str, proxytype: str, *,
                   user_agent: str | None = None, cookies: str | None = None, timeout: float | None = None,
                   **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("captchafox", timeout, dict(
            sitekey=sitekey, pageurl=pageurl, proxy=proxy, proxytype=proxytype, userAgent=user_agent,
            cookies=cookies, **extra)))

    def friendly_captcha(self, sitekey: str, pageurl: str, *, version: str | None = None,
                         timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("friendly_captcha", timeout, dict(
            sitekey=sitekey, pageurl=pageurl, version=version, **extra)))

    def funcaptcha(self, publickey: str, pageurl: str, *, surl: str | None = None, data: str | None = None,
                   user_agent: str | None = None, timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("funcaptcha", timeout, dict(
            publickey=publickey, pageurl=pageurl, surl=surl, data=data, userAgent=user_agent, **extra)))

    # ------------------------------------------------------------------------------------------ others

    def cloudflare_challenge(self, pageurl: str, proxy: str, proxytype: str, *, user_agent: str | None = None,
                             cookies: str | None = None, timeout: float | None = None,
                             **extra: ParamValue) -> ClearanceR:
        return cast(ClearanceR, self._call("cloudflare_challenge", timeout, dict(
            pageurl=pageurl, proxy=proxy, proxytype=proxytype, userAgent=user_agent, cookies=cookies, **extra)))

    def geetest(self, gt: str, challenge: str, pageurl: str, *, api_server: str | None = None,
                offline: bool | None = None, new_captcha: bool | None = None, user_agent: str | None = None,
                timeout: float | None = None, **extra: ParamValue) -> GeeTestR:
        return cast(GeeTestR, self._call("geetest", timeout, dict(
            gt=gt, challenge=challenge, pageurl=pageurl, api_server=api_server, offline=offline,
            new_captcha=new_captcha, userAgent=user_agent, **extra)))

    def geetest_v4(self, captcha_id: str, pageurl: str, *, risk_type: str | None = None,
                   user_agent: str | None = None, timeout: float | None = None, **extra: ParamValue) -> ObjectR:
        return cast(ObjectR, self._call("geetest_v4", timeout, dict(
            captcha_id=captcha_id, pageurl=pageurl, risk_type=risk_type, userAgent=user_agent, **extra)))

    def lemin(self, captcha_id: str, div_id: str, pageurl: str, *, api_server: str | None = None,
              timeout: float | None = None, **extra: ParamValue) -> ObjectR:
        return cast(ObjectR, self._call("lemin", timeout, dict(
            captcha_id=captcha_id, div_id=div_id, pageurl=pageurl, api_server=api_server, **extra)))

    # ------------------------------------------------------------------------------------------ 2captcha's others

    def text(self, question: str, *, lang: str | None = None, timeout: float | None = None,
             **extra: ParamValue) -> TextR:
        return cast(TextR, self._call("text", timeout, dict(textcaptcha=question, lang=lang, **extra)))

    def coordinates(self, image: ImageInput, *, instructions: str | None = None, min_clicks: int | None = None,
                    max_clicks: int | None = None, lang: str | None = None, timeout: float | None = None,
                    **extra: ParamValue) -> CoordinatesR:
        return cast(CoordinatesR, self._call("coordinates", timeout, dict(
            image=image, textinstructions=instructions, min_clicks=min_clicks, max_clicks=max_clicks, lang=lang,
            **extra)))

    def rotate(self, image: ImageInput, *, angle: int | None = None, instructions: str | None = None,
               timeout: float | None = None, **extra: ParamValue) -> AngleR:
        return cast(AngleR, self._call("rotate", timeout, dict(
            image=image, angle=angle, textinstructions=instructions, **extra)))

    def audio(self, audio: ImageInput, lang: str, *, timeout: float | None = None, **extra: ParamValue) -> TextR:
        """``audio``: an mp3 as bytes, a path, base64 or a URL (as images are given)."""
        return cast(TextR, self._call("audio", timeout, dict(image=audio, lang=lang, **extra)))

    def keycaptcha(self, s_s_c_user_id: str, s_s_c_session_id: str, s_s_c_web_server_sign: str,
                   s_s_c_web_server_sign2: str, pageurl: str, *, timeout: float | None = None,
                   **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("keycaptcha", timeout, dict(
            s_s_c_user_id=s_s_c_user_id, s_s_c_session_id=s_s_c_session_id,
            s_s_c_web_server_sign=s_s_c_web_server_sign, s_s_c_web_server_sign2=s_s_c_web_server_sign2,
            pageurl=pageurl, **extra)))

    def capy(self, sitekey: str, pageurl: str, *, api_server: str | None = None, timeout: float | None = None,
             **extra: ParamValue) -> ObjectR:
        return cast(ObjectR, self._call("capy", timeout, dict(
            captchakey=sitekey, pageurl=pageurl, api_server=api_server, **extra)))

    def amazon_waf(self, sitekey: str, iv: str, context: str, pageurl: str, *, challenge_script: str | None = None,
                   captcha_script: str | None = None, timeout: float | None = None, **extra: ParamValue) -> ObjectR:
        return cast(ObjectR, self._call("amazon_waf", timeout, dict(
            sitekey=sitekey, iv=iv, context=context, pageurl=pageurl, challenge_script=challenge_script,
            captcha_script=captcha_script, **extra)))

    def mtcaptcha(self, sitekey: str, pageurl: str, *, timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("mtcaptcha", timeout, dict(sitekey=sitekey, pageurl=pageurl, **extra)))

    def datadome(self, captcha_url: str, pageurl: str, user_agent: str, proxy: str, proxytype: str, *,
                 timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("datadome", timeout, dict(
            captcha_url=captcha_url, pageurl=pageurl, userAgent=user_agent, proxy=proxy, proxytype=proxytype,
            **extra)))

    def cutcaptcha(self, misery_key: str, api_key: str, pageurl: str, *, timeout: float | None = None,
                   **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("cutcaptcha", timeout, dict(
            misery_key=misery_key, api_key=api_key, pageurl=pageurl, **extra)))

    def tencent(self, app_id: str, pageurl: str, *, timeout: float | None = None, **extra: ParamValue) -> ObjectR:
        return cast(ObjectR, self._call("tencent", timeout, dict(app_id=app_id, pageurl=pageurl, **extra)))

    def atb_captcha(self, app_id: str, api_server: str, pageurl: str, *, timeout: float | None = None,
                    **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("atb_captcha", timeout, dict(
            app_id=app_id, api_server=api_server, pageurl=pageurl, **extra)))

    def yandex_smart(self, sitekey: str, pageurl: str, *, timeout: float | None = None,
                     **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("yandex_smart", timeout, dict(sitekey=sitekey, pageurl=pageurl, **extra)))

    def prosopo(self, sitekey: str, pageurl: str, *, timeout: float | None = None, **extra: ParamValue) -> TokenR:
        return cast(TokenR, self._call("prosopo", timeout, dict(sitekey=sitekey, pageurl=pageurl, **extra)))
