package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/smallstep/go-attestation/attest"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

func (s *Server) routesEnrollTPM(e *echo.Echo) {
	e.POST("/v1/enroll/tpm/challenge", s.tpmChallenge, s.door("tpm"), s.auditRefusals(provision.ActionEnrollTPMChallenge))
	e.POST("/v1/enroll/tpm", s.tpmEnroll, s.door("tpm"), s.auditRefusals(provision.ActionEnrollTPM))
}

// tpmChallenge is POST /v1/enroll/tpm/challenge: the TPM evidence is the
// proof; a bootstrap token ('Authorization: Bearer', optional) chooses the
// tenant and is spent by the enrollment. An Authorization header that is
// not a bearer token is handed to provision as it is, which refuses it
// (audited) as a malformed token.
func (s *Server) tpmChallenge(c echo.Context) error {
	token := c.Request().Header.Get("Authorization")
	if t, ok := bearer(c.Request()); ok {
		token = t
	} else if token != "" {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="devpki enroll"`)
	}
	var req wire.TPMChallengeRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ch, err := s.cfg.Provision.TPMChallenge(c.Request().Context(), &provision.TPMChallengeRequest{
		EKCertDER: req.EKCert,
		EKPubDER:  req.EKPub,
		AK: attest.AttestationParameters{
			Public:            req.AK.Public,
			CreateData:        req.AK.CreateData,
			CreateAttestation: req.AK.CreateAttestation,
			CreateSignature:   req.AK.CreateSignature,
		},
		Serial:     req.Serial,
		MACs:       req.MACs,
		Token:      token,
		SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, &wire.TPMChallengeResponse{
		ChallengeID: ch.ID,
		Credential:  ch.Credential.Credential,
		Secret:      ch.Credential.Secret,
		Nonce:       ch.Nonce,
		Expires:     ch.Expires.UTC(),
	})
}

// tpmEnroll is POST /v1/enroll/tpm: the answer to a challenge
// (Attestors.TPM).
func (s *Server) tpmEnroll(c echo.Context) error {
	var req wire.TPMEnrollRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if s.cfg.Attestors.TPM == nil {
		return provision.ErrTPMDisabled
	}
	res, err := s.cfg.Provision.Enroll(c.Request().Context(), s.cfg.Attestors.TPM, &provision.Request{
		CSRPEM: []byte(req.CSR),
		TPM: &provision.TPMAnswer{
			ChallengeID:     req.ChallengeID,
			ActivatedSecret: req.ActivatedSecret,
			Certify:         *certification(&req.Certify),
		},
		SourceAddr: c.RealIP(),
	})
	if err != nil {
		return err
	}
	return s.issued(c, res)
}

// certification is the TPM2_Certify a request carries, as go-attestation
// takes it; nil when it carries none.
func certification(w *wire.TPMCertificationParameters) *attest.CertificationParameters {
	if w == nil {
		return nil
	}
	return &attest.CertificationParameters{
		Public:            w.Public,
		CreateData:        w.CreateData,
		CreateAttestation: w.CreateAttestation,
		CreateSignature:   w.CreateSignature,
	}
}
