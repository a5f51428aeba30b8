"""The token endpoint: trade a username and password for a token; revoke the one you use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.utils.cache import add_never_cache_headers
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from apps.accounts import services
from apps.accounts.authentication import CachedTokenAuthentication
from apps.accounts.throttles import LoginAddressThrottle, LoginUsernameThrottle


class Credentials(AuthTokenSerializer):
    """DRF's username and password check, with its refusal in plain words."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().validate(attrs)
        except serializers.ValidationError as exc:
            if exc.get_codes() != ["authorization"]:
                raise
            # One message for both a wrong password and an unknown user: which was wrong
            # is not said.
            raise serializers.ValidationError(WRONG_CREDENTIALS, code="authorization") from None


WRONG_CREDENTIALS = "Unable to log in with the given username and password."


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField(source="key")
    expiry = serializers.DateTimeField()


class TokenView(APIView):
    """POST: a new token for a username and password. DELETE: revoke the calling token."""

    # Only a token can be revoked here; a session (no token) is anonymous to this view.
    authentication_classes = (CachedTokenAuthentication,)

    def get_permissions(self) -> Sequence[BasePermission]:
        if self.request.method == "POST":
            return [AllowAny()]
        return [IsAuthenticated()]

    def get_throttles(self) -> list[BaseThrottle]:
        if self.request.method == "POST":  # counted before the password is checked
            return [LoginAddressThrottle(), LoginUsernameThrottle()]
        return super().get_throttles()

    @extend_schema(request=AuthTokenSerializer, responses=TokenOutputSerializer)
    def post(self, request: Request) -> Response:
        """Return a new token and its expiry for a username and password (shown only here)."""
        credentials = Credentials(data=request.data, context={"request": request})
        credentials.is_valid(raise_exception=True)
        issued = services.issue_token(user=credentials.validated_data["user"])
        response = Response(TokenOutputSerializer(issued).data)
        add_never_cache_headers(response)  # the key is shown once: no cache may keep it
        return response

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        """Revoke the token this request is authenticated with; other devices' tokens stay."""
        services.revoke_token(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)
